"""Real models packaged on PyPI: the pinned catalog (:mod:`.entries`), the fetcher
(:mod:`.fetch`) and ``dac models`` (:mod:`.commands`)."""

from .entries import CATALOG, CatalogEntry, Part, get_entry

__all__ = ["CATALOG", "CatalogEntry", "Part", "get_entry"]
