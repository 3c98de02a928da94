"""Scraping a running program's /metrics as Prometheus would: over HTTP, parsed by prometheus_client's parser."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from helpers.wait import wait_for


@dataclass(frozen=True)
class Scrape:
    """One scrape: ``value(name, **labels)`` is the sample's value (KeyError: absent)."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    families: dict[str, str]  # family name -> type
    content_type: str

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def labels(self, name: str, label: str) -> dict[str, float]:
        """``label``'s value -> the sample's, for every sample of ``name``."""
        return {dict(k)[label]: v for (n, k), v in self.samples.items() if n == name}


def scrape(port: int, path: str = "/metrics", timeout_s: float = 10.0) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as resp:
        text = resp.read().decode()
        content_type = resp.headers.get("Content-Type", "")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    families: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return Scrape(samples, families, content_type)


def scrape_or_none(port: int) -> Scrape | None:
    """The scrape, or None while nothing answers there (yet)."""
    try:
        return scrape(port, timeout_s=2.0)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def scrape_when(port: int, cond: Callable[[Scrape], bool], what: str, timeout_s: float = 60.0) -> Scrape:
    """Scrape until ``cond(scrape)`` holds, and return that scrape; fail naming ``what``."""
    found: list[Scrape] = []

    def check() -> bool:
        got = scrape_or_none(port)
        if got is not None and cond(got):
            found.append(got)
            return True
        return False

    wait_for(check, timeout_s, what, step_s=0.3)
    return found[-1]
