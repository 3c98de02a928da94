"""A device manual's register table (docs/devices/*.md) checked against the register map it documents."""

from __future__ import annotations

from protocols.modbus.registermap import RegisterMap, Table


def doc_rows(text: str, section: str = "## Register table") -> dict[str, dict[str, str]]:
    """The table under ``section``: point name -> {column header (lower case): cell}."""
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    lines = [ln.strip() for ln in body.splitlines() if ln.strip().startswith("|")]
    header = [c.strip().lower() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:  # skip the |---| line
        cells = [c.strip() for c in ln.strip("|").split("|")]
        row = dict(zip(header, cells, strict=True))
        rows[row["name"]] = row
    return rows


def doc_mismatches(text: str, register_map: RegisterMap, *, check_access: bool = False) -> list[str]:
    """Every difference between the doc's table and the map (points in order, table, address, type, words,
    scale, unit, and with ``check_access`` R or R/W by table); an empty list when they agree."""
    rows = doc_rows(text)
    problems = []
    if list(rows) != [p.name for p in register_map.points]:
        problems.append(f"points differ: doc {list(rows)}")
    for p in register_map.points:
        row = rows.get(p.name)
        if row is None:
            continue
        expected = {
            "table": p.table.value,
            "address": str(p.address),
            "type": p.dtype.value,
            "registers": str(p.words),
            "scale": f"{p.scale:g}",
            "unit": p.unit,
        }
        if check_access:
            expected["access"] = "R/W" if p.table in (Table.HOLDING, Table.COIL) else "R"
        for column, value in expected.items():
            if row[column] != value:
                problems.append(f"{p.name}.{column}: doc {row[column]!r}, map {value!r}")
        if not row["description"]:
            problems.append(f"{p.name}: no description")
    return problems
