"""SunSpec discovery, sans-IO: the reads that find a device's SunSpec map and lay out its models.

:func:`discovery` is a generator. It yields :class:`ReadRequest` (holding registers to read); the caller sends
back the words read, or :class:`Refusal` when the device answered a Modbus exception; it returns a
:class:`DiscoveredDevice` or raises :class:`DiscoveryError` naming where the map is wrong. A transport failure
(no answer, link down) is the caller's to handle: it simply stops driving. :func:`protocols.sunspec.client.discover`
drives it over a Modbus transport; tests drive it from tables.

What it reads (SunSpec Information Model Specification, "Device Modbus map"):

1. The marker "SunS" (0x5375 0x6E53) at each base address in turn, 40000, 0, 50000 (with the first model's
   header in the same read). None: DiscoveryError listing what each base held.
2. The model chain: each model's ID and L; the next model starts at address + 2 + L; the end model has ID
   0xFFFF. The chain is bounded: a model that would reach past register 65535, or more than
   :data:`MAX_MODELS` models, is an error naming the model and its address; so is a chain that breaks (the device
   refuses a header read) before the end model. The first model must be the common model 1 (ibid.).
3. For a model with repeating groups, the count points (``NCrv``, ``NPt``, ``NCtl``...) from the device, and the
   groups laid out from them; in a legacy model (definition count 0) the count follows from L.
4. Model 1 whole: manufacturer, model, options, version, serial number, device address.

A model pysunspec2 does not define (a vendor model), one whose L disagrees with its definition, one whose counts
read "not implemented", is skipped and named in :attr:`DiscoveredDevice.skipped`; the walk goes on past it by its L.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass

from protocols.modbus.errors import EXCEPTION_NAMES
from protocols.modbus.registermap import MAX_READ_REGISTERS, DecodeError, decode_point
from protocols.sunspec.layout import (
    BASE_ADDRESSES,
    END_MODEL_ID,
    REGISTER_SPACE,
    SUNS_WORDS,
    ModelBlock,
    ModelLayout,
    SunSpecLayout,
    SunSpecLayoutError,
    count_points,
    known_model,
    lay_model,
    layout_of,
)
from protocols.sunspec.values import is_not_implemented

# A chain longer than this is taken for a device answering garbage (real devices have a handful of models).
MAX_MODELS = 128
COMMON_MODEL = 1


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """Read ``count`` holding registers from ``address`` (function 3); ``why`` says what for, for logs."""

    address: int
    count: int
    why: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """The device answered a read with Modbus exception ``code`` (Modbus Application Protocol v1.1b3, 7)."""

    code: int

    def __str__(self) -> str:
        return f"exception {self.code} ({EXCEPTION_NAMES.get(self.code, 'unknown exception')})"


Answer = list[int] | Refusal


class DiscoveryError(Exception):
    """The device has no usable SunSpec map; the message names the address and what was found there."""

    def __init__(self, message: str, address: int | None = None) -> None:
        self.address = address
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ModelHeader:
    """One model of the chain as the device announces it."""

    model_id: int
    address: int
    length: int


@dataclass(frozen=True, slots=True)
class SkippedModel:
    """A model of the chain left out of the layout, and why."""

    model_id: int
    address: int
    length: int
    reason: str


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """What discovery found: the base, the layout (raw registers), model 1's values, the chain, what was skipped."""

    base: int
    layout: SunSpecLayout
    common: dict[str, float | int | str | None]  # model 1's points by their short name (Mn, Md, SN, Vr, DA...)
    chain: tuple[ModelHeader, ...]
    skipped: tuple[SkippedModel, ...]

    @property
    def model_ids(self) -> tuple[int, ...]:
        """The ids of the models laid out (the end model excluded), in address order."""
        return tuple(m.model_id for m in self.layout.models[:-1])


Steps = Generator[ReadRequest, Answer, DiscoveredDevice]


def _read(address: int, count: int, why: str) -> Generator[ReadRequest, Answer, Answer]:
    """Read ``count`` registers in requests of at most 125 (Modbus Application Protocol v1.1b3, 6.3)."""
    words: list[int] = []
    while count > 0:
        n = min(count, MAX_READ_REGISTERS)
        answer = yield ReadRequest(address, n, why)
        if isinstance(answer, Refusal):
            return answer
        if len(answer) != n:
            raise DiscoveryError(f"a read of {n} registers at {address} ({why}) returned {len(answer)}", address)
        words += answer
        address, count = address + n, count - n
    return words


def discovery(bases: tuple[int, ...] = BASE_ADDRESSES, *, max_models: int = MAX_MODELS) -> Steps:
    """The discovery of one device: yields reads, takes their answers, returns the device (module docstring)."""
    found: list[str] = []
    base = header = None
    for b in bases:
        answer = yield from _read(b, 4, "SunS marker")
        if isinstance(answer, Refusal):
            found.append(f"{b}: {answer}")
            continue
        if tuple(answer[:2]) != SUNS_WORDS:
            found.append(f"{b}: 0x{answer[0]:04X} 0x{answer[1]:04X}")
            continue
        base, header = b, (answer[2], answer[3])
        break
    if base is None or header is None:
        raise DiscoveryError(f"no SunSpec marker 'SunS' (0x5375 0x6E53) at {', '.join(map(str, bases))} ("
                             + "; ".join(found) + ")")  # fmt: skip
    address = base + 2
    model_id, length = header
    chain: list[ModelHeader] = []
    models: list[ModelLayout] = []
    skipped: list[SkippedModel] = []
    common: dict[str, float | int | str | None] = {}
    instances: dict[int, int] = {}
    while model_id != END_MODEL_ID:
        if len(chain) >= max_models:
            raise DiscoveryError(f"more than {max_models} models from {base}: no end model (0xFFFF) by {address}",
                                 address)  # fmt: skip
        if address + 2 + length + 2 > REGISTER_SPACE:
            raise DiscoveryError(f"model {model_id} at {address}: L = {length} runs past the register space (65535) "
                                 "before the chain's end model", address)  # fmt: skip
        if not chain and model_id != COMMON_MODEL:
            raise DiscoveryError(f"the first model at {address} is {model_id}: SunSpec puts the common model 1 first",
                                 address)  # fmt: skip
        head = ModelHeader(model_id, address, length)
        chain.append(head)
        instances[model_id] = instances.get(model_id, 0) + 1
        laid, reason = yield from _model(head, instances[model_id])
        if laid is None:
            skipped.append(SkippedModel(model_id, address, length, reason))
        else:
            models.append(laid)
            if model_id == COMMON_MODEL and instances[model_id] == 1:
                common = yield from _common(laid)
        nxt = address + 2 + length
        answer = yield from _read(nxt, 2, "model header")
        if isinstance(answer, Refusal):
            raise DiscoveryError(f"the model chain breaks at {nxt}, after model {model_id} at {address} "
                                 f"(L = {length}): {answer} where a model header or the end model 0xFFFF belongs",
                                 nxt)  # fmt: skip
        address = nxt
        model_id, length = answer
    chain_t = tuple(chain)
    return DiscoveredDevice(base, layout_of(models, base, end_address=address), common, chain_t, tuple(skipped))


def _model(head: ModelHeader, instance: int) -> Generator[ReadRequest, Answer, tuple[ModelLayout | None, str]]:
    """Lay out one model of the chain (reading its counts first); (None, why) when it is skipped."""
    mid, address, length = head.model_id, head.address, head.length
    if not known_model(mid):
        return None, "not a model pysunspec2 ships (a vendor model, or one newer than the installed pysunspec2)"
    try:
        top = lay_model(mid, address, {path: 0 for path in count_points(mid)}, length=length)
    except SunSpecLayoutError as err:
        return None, str(err)
    name = top.block.name if instance == 1 else f"{top.block.name}[{instance}]"
    counts: dict[str, int] = {}
    refs = count_points(mid)
    if refs:
        by_name = {p.name.rsplit(".", 1)[1]: p for p in top.points}
        cps = {path: by_name[ref] for path, ref in refs.items() if ref in by_name}
        if len(cps) != len(refs):
            return None, "its definition counts a group by a point that is not at the model's top level"
        start = min(p.register.address for p in cps.values())
        end = max(p.register.end for p in cps.values())
        if end > address + 2 + length:
            return None, f"its count points reach past its L ({length})"
        answer = yield from _read(start, end - start, f"model {mid} counts")
        if isinstance(answer, Refusal):
            return None, f"reading its counts at {start}: {answer}"
        for path, p in cps.items():
            n = decode_point(p.register, answer[p.register.address - start : p.register.end - start])
            if is_not_implemented(p, n):
                return None, f"its count {p.name.rsplit('.', 1)[1]} reads 'not implemented'"
            if not isinstance(n, int) or n > length:
                return None, f"its count {p.name.rsplit('.', 1)[1]} = {n} cannot fit L = {length}"
            counts[path] = n
    try:
        laid = lay_model(mid, address, counts, length=length, name=name)
    except SunSpecLayoutError as err:
        return None, f"{err} (L = {length}, counts {_counts_text(counts)})"
    return _fit(laid, length, counts)


def _fit(laid: ModelLayout, length: int, counts: Mapping[str, int]) -> tuple[ModelLayout | None, str]:
    """The layout cut to the device's L when only trailing pad points lie beyond it; else (None, why)."""
    if laid.block.length == length:
        return laid, ""
    end = laid.block.address + 2 + length
    beyond = [p for p in laid.points if p.register.end > end]
    if laid.block.length > length and all(p.sunspec_type == "pad" for p in beyond):
        kept = tuple(p for p in laid.points if p.register.end <= end)
        block = ModelBlock(laid.block.model_id, laid.block.name, laid.block.address, length)
        return ModelLayout(block, kept, laid.counts), ""
    counted = f" with counts {_counts_text(counts)}" if counts else ""
    return None, f"L = {length} but its definition takes {laid.block.length} registers{counted}"


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items()) or "none"


def _common(laid: ModelLayout) -> Generator[ReadRequest, Answer, dict[str, float | int | str | None]]:
    """Model 1's points read whole and decoded (None for a point that does not decode or is not implemented)."""
    block = laid.block
    answer = yield from _read(block.address, block.length + 2, "common model 1")
    if isinstance(answer, Refusal):
        raise DiscoveryError(f"the common model 1 at {block.address} cannot be read: {answer}", block.address)
    out: dict[str, float | int | str | None] = {}
    for p in laid.points[2:]:
        if p.sunspec_type == "pad":
            continue
        at = p.register.address - block.address
        try:
            value = decode_point(p.register, answer[at : at + p.register.words])
        except DecodeError:
            value = None
        out[p.name.split(".", 1)[1]] = None if is_not_implemented(p, value) else value  # type: ignore[arg-type]
    return out
