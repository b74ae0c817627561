"""Offer catalogues: offers declared in a YAML or JSON file, imported and exported by key.

A catalogue is a mapping with an ``offers`` list. Every offer has a stable ``key``
(stored in :attr:`Offer.key`) and the fields of :class:`~usercredits.models.Offer`;
offers refer to each other by key, never by database id:

* ``combined_items``: ``{offer: KEY, quantity: N, offer_group: G, cycle: C}``, the
  group defaulting to the item offer's own;
* ``unlocked_by``: offer groups (plain strings) or ``{offer: KEY}`` for the group
  of that offer, which is then marked ``has_dependent_offers``.

Importing updates offers by key and creates the missing ones, so importing the
same file twice changes nothing, and an export imports back to the same offers.
Prices are read as exact decimals (a YAML or JSON ``9.99`` never becomes a float)
and exported as strings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml

from usercredits.dao import OfferDao
from usercredits.errors import InvalidOfferError
from usercredits.models import CombinedOffer, Cycle, Offer, OfferKind

CatalogFormat = Literal["yaml", "json"]

_REQUIRED = ("key", "name", "kind", "offer_group", "cycle", "price")
_ITEM_FIELDS = ("offer", "offer_group", "quantity", "cycle", "custom_cycle")


@dataclass(frozen=True)
class CatalogProblem:
    """One thing wrong in a catalogue: which entry, which field, and why."""

    entry: str
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.entry if self.field is None else f"{self.entry}, field {self.field!r}"
        return f"{where}: {self.message}"


class CatalogError(InvalidOfferError):
    """A catalogue cannot be read, validated or imported; ``problems`` lists every issue found.

    Nothing is written when an import raises it."""

    def __init__(self, source: str, problems: Sequence[CatalogProblem]):
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {p}" for p in self.problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, kw_only=True)
class CatalogItem:
    """A bundle item of a catalogue entry, referring to its offer by key."""

    offer: str
    offer_group: str | None = None
    quantity: int = 1
    cycle: Cycle | None = None
    custom_cycle: int | None = None


@dataclass(frozen=True, kw_only=True)
class UnlockRef:
    """An ``unlocked_by`` reference: an offer ``group``, or the group of the ``offer`` key."""

    group: str | None = None
    offer: str | None = None


@dataclass(kw_only=True)
class CatalogEntry:
    """One validated offer of a catalogue, its references not yet resolved to stored offers."""

    offer: Offer
    """The offer's own fields (without ``combined_items`` and ``unlocked_by``)."""
    items: list[CatalogItem] = field(default_factory=list)
    unlocked_by: list[UnlockRef] = field(default_factory=list)
    has_dependent_offers: bool | None = None
    """As written in the file; None when absent (an existing offer keeps its value)."""
    label: str = ""

    @property
    def key(self) -> str:
        assert self.offer.key is not None
        return self.offer.key


@dataclass
class Catalog:
    """A validated catalogue, ready to import."""

    entries: list[CatalogEntry]
    source: str = "<catalog>"

    def keys(self) -> list[str]:
        """The keys of the catalogue's offers, in file order."""
        return [e.key for e in self.entries]


@dataclass
class ImportResult:
    """What an import did (or would do, for a dry run), as lists of offer keys."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the import created or updated any offer."""
        return bool(self.created or self.updated)


# -- reading ---------------------------------------------------------------------------


class _DecimalLoader(yaml.SafeLoader):
    """The safe YAML loader, reading floats as exact Decimals."""


def _yaml_decimal(loader: yaml.SafeLoader, node: yaml.nodes.Node) -> Decimal | str:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        return Decimal(text)
    except InvalidOperation:
        return text


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _yaml_decimal)


def format_of(path: str | os.PathLike[str] | Traversable) -> CatalogFormat:
    """The catalogue format a file name implies: ``json`` for ``.json``, else ``yaml``."""
    name = os.fspath(path) if isinstance(path, str | os.PathLike) else path.name
    return "json" if name.lower().endswith(".json") else "yaml"


def read_catalog(path: str | os.PathLike[str] | Traversable) -> Catalog:
    """Read and validate a catalogue file (``.json`` is JSON, anything else YAML).

    Raises CatalogError naming every invalid entry and field; OSError when the file cannot
    be read."""
    source = Path(path) if isinstance(path, str | os.PathLike) else path
    return loads_catalog(source.read_text(encoding="utf-8"), format_of(source), str(source.name))


def loads_catalog(text: str, fmt: CatalogFormat = "yaml", source: str = "<catalog>") -> Catalog:
    """Parse and validate a catalogue from text; raises CatalogError."""
    try:
        if fmt == "json":
            document = json.loads(text, parse_float=Decimal)
        else:
            document = yaml.load(text, Loader=_DecimalLoader)
    except (ValueError, yaml.YAMLError) as e:
        problem = CatalogProblem("catalogue", None, f"not valid {fmt}: {e}")
        raise CatalogError(source, [problem]) from e
    return parse_catalog(document, source)


def parse_catalog(document: Any, source: str = "<catalog>") -> Catalog:
    """Validate a catalogue already parsed into Python objects (``{"offers": [...]}``).

    Raises CatalogError listing every problem: unknown or missing fields, wrong types,
    duplicate keys."""
    problems: list[CatalogProblem] = []
    if isinstance(document, Mapping):
        unknown = sorted(str(k) for k in document if k != "offers")
        if unknown:
            problems.append(
                CatalogProblem("catalogue", None, f"unknown top-level field(s): {unknown}")
            )
        raw_offers = document.get("offers", [])
    elif document is None:
        raw_offers = []
    else:
        raise CatalogError(
            source,
            [CatalogProblem("catalogue", None, "must be a mapping with an 'offers' list")],
        )
    if not isinstance(raw_offers, list):
        raise CatalogError(source, [CatalogProblem("catalogue", "offers", "must be a list")])
    entries: list[CatalogEntry] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(raw_offers):
        entry = _parse_entry(index, raw, problems)
        if entry is None:
            continue
        if entry.key in seen:
            problems.append(
                CatalogProblem(
                    entry.label, "key", f"duplicate key, already used by {seen[entry.key]}"
                )
            )
            continue
        seen[entry.key] = entry.label
        entries.append(entry)
    if problems:
        raise CatalogError(source, problems)
    return Catalog(entries=entries, source=source)


class _Invalid(Exception):
    pass


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a non-empty string, got {value!r}")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _texts(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Invalid(f"must be a list of non-empty strings, got {value!r}")
    return list(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {value!r}")
    return value


def _integer(minimum: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise _Invalid(f"must be at least {minimum}, got {value}")
        return value

    return check


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _choice(kind: type[Cycle] | type[OfferKind]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            raise _Invalid(f"unknown value {value!r} (expected one of: {allowed})") from None

    return check


def _price(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise _Invalid(f"must be a number, got {value!r}")
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise _Invalid(f"must be a number, got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise _Invalid(f"must be a finite amount of at least 0, got {value!r}")
    return price


def _currency(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise _Invalid(f"must be a 3-letter ISO 4217 code, got {value!r}")
    return value.lower()


_OFFER_FIELDS: dict[str, Callable[[Any], Any]] = {
    "key": _text,
    "name": _text,
    "kind": _choice(OfferKind),
    "offer_group": _text,
    "cycle": _choice(Cycle),
    "custom_cycle": _optional(_integer(1)),
    "price": _price,
    "currency": _optional(_currency),
    "token_count": _optional(_integer(0)),
    "quantity_limit": _optional(_integer(1)),
    "append_date": _flag,
    "tags": _texts,
    "unlocked_by": lambda value: value,
    "has_dependent_offers": _flag,
    "overriding_key": _optional_text,
    "weight": _integer(),
    "popular": _optional(_integer()),
    "combined_items": lambda value: value,
}


def _check_custom_cycle(
    values: Mapping[str, Any], label: str, prefix: str, problems: list[CatalogProblem]
) -> bool:
    cycle, custom = values.get("cycle"), values.get("custom_cycle")
    if cycle is Cycle.CUSTOM and custom is None:
        problems.append(
            CatalogProblem(label, f"{prefix}custom_cycle", "required with cycle 'custom' (seconds)")
        )
        return False
    if cycle is not Cycle.CUSTOM and custom is not None:
        problems.append(
            CatalogProblem(label, f"{prefix}custom_cycle", "only allowed with cycle 'custom'")
        )
        return False
    return True


def _parse_entry(index: int, raw: Any, problems: list[CatalogProblem]) -> CatalogEntry | None:
    label = f"offers[{index}]"
    if not isinstance(raw, Mapping):
        problems.append(CatalogProblem(label, None, f"must be a mapping, got {raw!r}"))
        return None
    if isinstance(raw.get("key"), str) and raw["key"]:
        label = f"{label} {raw['key']!r}"
    before = len(problems)
    unknown = sorted(str(k) for k in raw if k not in _OFFER_FIELDS)
    for name in unknown:
        problems.append(
            CatalogProblem(label, name, f"unknown field (known: {', '.join(_OFFER_FIELDS)})")
        )
    values: dict[str, Any] = {}
    for name in _REQUIRED:
        if name not in raw:
            problems.append(CatalogProblem(label, name, "missing"))
    for name, check in _OFFER_FIELDS.items():
        if name in raw:
            try:
                values[name] = check(raw[name])
            except _Invalid as e:
                problems.append(CatalogProblem(label, name, str(e)))
    items = _parse_items(raw.get("combined_items", []), label, problems)
    unlocks = _parse_unlocks(raw.get("unlocked_by", []), label, problems)
    if len(problems) > before or not _check_custom_cycle(values, label, "", problems):
        return None
    has_dependents = values.pop("has_dependent_offers", None)
    values.pop("combined_items", None)
    values.pop("unlocked_by", None)
    try:
        offer = Offer(**values)
    except InvalidOfferError as e:
        problems.append(CatalogProblem(label, None, str(e)))
        return None
    return CatalogEntry(
        offer=offer,
        items=items,
        unlocked_by=unlocks,
        has_dependent_offers=has_dependents,
        label=label,
    )


def _parse_items(raw: Any, label: str, problems: list[CatalogProblem]) -> list[CatalogItem]:
    if not isinstance(raw, list):
        problems.append(CatalogProblem(label, "combined_items", f"must be a list, got {raw!r}"))
        return []
    items: list[CatalogItem] = []
    checks: dict[str, Callable[[Any], Any]] = {
        "offer": _text,
        "offer_group": _optional_text,
        "quantity": _integer(1),
        "cycle": _optional(_choice(Cycle)),
        "custom_cycle": _optional(_integer(1)),
    }
    for index, item in enumerate(raw):
        prefix = f"combined_items[{index}]."
        if not isinstance(item, Mapping):
            problems.append(
                CatalogProblem(
                    label, prefix[:-1], f"must be a mapping with an offer key, got {item!r}"
                )
            )
            continue
        before = len(problems)
        for name in sorted(str(k) for k in item if k not in checks):
            problems.append(
                CatalogProblem(label, prefix + name, f"unknown field (known: {', '.join(checks)})")
            )
        if "offer" not in item:
            problems.append(CatalogProblem(label, prefix + "offer", "missing (the item's key)"))
        values: dict[str, Any] = {}
        for name, check in checks.items():
            if name in item:
                try:
                    values[name] = check(item[name])
                except _Invalid as e:
                    problems.append(CatalogProblem(label, prefix + name, str(e)))
        if len(problems) > before:
            continue
        has_cycle = values.get("cycle") is not None or values.get("custom_cycle") is not None
        if has_cycle and not _check_custom_cycle(values, label, prefix, problems):
            continue
        items.append(CatalogItem(**values))
    return items


def _parse_unlocks(raw: Any, label: str, problems: list[CatalogProblem]) -> list[UnlockRef]:
    if not isinstance(raw, list):
        problems.append(CatalogProblem(label, "unlocked_by", f"must be a list, got {raw!r}"))
        return []
    refs: list[UnlockRef] = []
    for index, ref in enumerate(raw):
        name = f"unlocked_by[{index}]"
        if isinstance(ref, str) and ref:
            refs.append(UnlockRef(group=ref))
        elif (
            isinstance(ref, Mapping)
            and len(ref) == 1
            and set(ref) <= {"offer", "group"}
            and isinstance(next(iter(ref.values())), str)
            and next(iter(ref.values()))
        ):
            refs.append(UnlockRef(**{str(k): v for k, v in ref.items()}))
        else:
            problems.append(
                CatalogProblem(
                    label,
                    name,
                    f"must be a group name, {{group: NAME}} or {{offer: KEY}}, got {ref!r}",
                )
            )
    return refs


# -- importing -------------------------------------------------------------------------


@dataclass
class _Target:
    offer_group: str
    is_bundle: bool
    stored: Offer | None


def import_catalog(offers: OfferDao, catalog: Catalog, *, dry_run: bool = False) -> ImportResult:
    """Create or update the catalogue's offers by key (offers absent from it are left alone).

    Every reference is checked before anything is written: a bundle item or an
    ``{offer: KEY}`` must name an offer of the catalogue or of the store, a bundle item
    must not itself be a bundle, and bundles must not contain each other. Offers only
    change where their fields differ, so a second import of the same catalogue changes
    nothing. Items are written before the bundles that contain them. With ``dry_run``,
    nothing is written. Raises CatalogError (nothing written) on a bad reference."""
    in_file = {e.key: e for e in catalog.entries}
    referenced = {i.offer for e in catalog.entries for i in e.items} | {
        r.offer for e in catalog.entries for r in e.unlocked_by if r.offer is not None
    }
    stored = {key: offers.find_by_key(key) for key in set(in_file) | referenced}
    targets: dict[str, _Target] = {}
    for key, offer in stored.items():
        entry = in_file.get(key)
        if entry is not None:
            targets[key] = _Target(entry.offer.offer_group, bool(entry.items), offer)
        elif offer is not None:
            targets[key] = _Target(offer.offer_group, bool(offer.combined_items), offer)
    problems = _check_references(catalog, targets)
    ordered = _dependency_order(catalog, problems)
    if problems:
        raise CatalogError(catalog.source, problems)

    dependents = {r.offer for e in catalog.entries for r in e.unlocked_by if r.offer is not None}
    result = ImportResult()
    ids: dict[str, Any] = {k: t.stored.id for k, t in targets.items() if t.stored is not None}
    for entry in ordered:
        existing = targets[entry.key].stored
        wanted = dataclasses.replace(
            entry.offer,
            unlocked_by=_unique(
                r.group if r.group is not None else targets[str(r.offer)].offer_group
                for r in entry.unlocked_by
            ),
            combined_items=[
                CombinedOffer(
                    offer_id=ids.get(item.offer, f"<new offer {item.offer}>"),
                    offer_group=item.offer_group or targets[item.offer].offer_group,
                    quantity=item.quantity,
                    cycle=item.cycle,
                    custom_cycle=item.custom_cycle,
                )
                for item in entry.items
            ],
            has_dependent_offers=(
                entry.key in dependents
                or bool(entry.has_dependent_offers)
                or (
                    entry.has_dependent_offers is None
                    and bool(existing and existing.has_dependent_offers)
                )
            ),
        )
        if existing is None:
            result.created.append(entry.key)
            if not dry_run:
                ids[entry.key] = offers.create(wanted).id
            continue
        changes = _changes(existing, wanted)
        if not changes:
            result.unchanged.append(entry.key)
            continue
        result.updated.append(entry.key)
        if not dry_run:
            offers.update_by_id(existing.id, changes)
    for key in sorted(dependents - set(in_file)):
        outside = targets[key].stored
        if outside is not None and not outside.has_dependent_offers:
            result.updated.append(key)
            if not dry_run:
                offers.update_by_id(outside.id, {"has_dependent_offers": True})
    return result


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _check_references(catalog: Catalog, targets: Mapping[str, _Target]) -> list[CatalogProblem]:
    problems: list[CatalogProblem] = []
    for entry in catalog.entries:
        for index, item in enumerate(entry.items):
            target = targets.get(item.offer)
            name = f"combined_items[{index}].offer"
            if target is None:
                problems.append(
                    CatalogProblem(
                        entry.label,
                        name,
                        f"no offer with key {item.offer!r} in the catalogue or the store",
                    )
                )
            elif target.is_bundle:
                problems.append(
                    CatalogProblem(
                        entry.label,
                        name,
                        f"offer {item.offer!r} is itself a bundle; bundles do not nest",
                    )
                )
        for index, ref in enumerate(entry.unlocked_by):
            if ref.offer is not None and ref.offer not in targets:
                problems.append(
                    CatalogProblem(
                        entry.label,
                        f"unlocked_by[{index}]",
                        f"no offer with key {ref.offer!r} in the catalogue or the store",
                    )
                )
    return problems


def _dependency_order(catalog: Catalog, problems: list[CatalogProblem]) -> list[CatalogEntry]:
    """The entries with every bundle after the catalogue items it contains (stable)."""
    by_key = {e.key: e for e in catalog.entries}
    ordered: list[CatalogEntry] = []
    state: dict[str, str] = {}

    def visit(entry: CatalogEntry, path: list[str]) -> None:
        if state.get(entry.key) == "done":
            return
        if state.get(entry.key) == "visiting":
            cycle = " -> ".join([*path[path.index(entry.key) :], entry.key])
            problems.append(CatalogProblem(entry.label, "combined_items", f"bundle cycle {cycle}"))
            return
        state[entry.key] = "visiting"
        for item in entry.items:
            if item.offer in by_key:
                visit(by_key[item.offer], [*path, entry.key])
        state[entry.key] = "done"
        ordered.append(entry)

    for entry in catalog.entries:
        visit(entry, [])
    return ordered


def _comparable(name: str, value: Any) -> Any:
    if name == "combined_items":
        return [
            (str(i.offer_id), i.offer_group, i.quantity, i.cycle, i.custom_cycle) for i in value
        ]
    return value


def _changes(existing: Offer, wanted: Offer) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(Offer):
        if f.name == "id":
            continue
        new = getattr(wanted, f.name)
        if _comparable(f.name, getattr(existing, f.name)) != _comparable(f.name, new):
            changes[f.name] = new
    return changes


# -- exporting -------------------------------------------------------------------------


def export_catalog(offers: OfferDao) -> dict[str, Any]:
    """Every stored offer as a catalogue document (``{"offers": [...]}``), in creation order.

    Default values are left out; prices are strings. Raises CatalogError when an offer
    has no key, or a bundle contains an offer that has none (keys are what a catalogue
    refers to)."""
    stored = offers.find({})
    by_id = {str(o.id): o for o in stored}
    problems: list[CatalogProblem] = []
    documents: list[dict[str, Any]] = []
    for offer in stored:
        label = f"offer {offer.name!r} (id {offer.id})"
        if offer.key is None:
            problems.append(
                CatalogProblem(label, "key", "missing; give the offer a key to export it")
            )
            continue
        doc = _offer_document(offer)
        items = []
        for item_index, item in enumerate(offer.combined_items):
            target = by_id.get(str(item.offer_id))
            if target is None or target.key is None:
                problems.append(
                    CatalogProblem(
                        label,
                        f"combined_items[{item_index}]",
                        f"offer {item.offer_id} has no key (or no longer exists)",
                    )
                )
                continue
            items.append(_item_document(item, target))
        if items:
            doc["combined_items"] = items
        documents.append(doc)
    if problems:
        raise CatalogError("export", problems)
    return {"offers": documents}


def _offer_document(offer: Offer) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "key": offer.key,
        "name": offer.name,
        "kind": offer.kind.value,
        "offer_group": offer.offer_group,
        "cycle": offer.cycle.value,
    }
    if offer.custom_cycle is not None:
        doc["custom_cycle"] = offer.custom_cycle
    doc["price"] = str(offer.price)
    optional: dict[str, Any] = {
        "currency": offer.currency,
        "token_count": offer.token_count,
        "quantity_limit": offer.quantity_limit,
        "append_date": offer.append_date or None,
        "tags": list(offer.tags) or None,
        "unlocked_by": list(offer.unlocked_by) or None,
        "has_dependent_offers": offer.has_dependent_offers or None,
        "overriding_key": offer.overriding_key,
        "weight": offer.weight or None,
        "popular": offer.popular,
    }
    doc.update({name: value for name, value in optional.items() if value is not None})
    return doc


def _item_document(item: CombinedOffer, target: Offer) -> dict[str, Any]:
    doc: dict[str, Any] = {"offer": target.key}
    if item.offer_group != target.offer_group:
        doc["offer_group"] = item.offer_group
    if item.quantity != 1:
        doc["quantity"] = item.quantity
    if item.cycle is not None:
        doc["cycle"] = item.cycle.value
    if item.custom_cycle is not None:
        doc["custom_cycle"] = item.custom_cycle
    return doc


def dumps_catalog(document: Mapping[str, Any], fmt: CatalogFormat = "yaml") -> str:
    """A catalogue document as YAML or JSON text."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True)
