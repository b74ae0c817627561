"""Catalogue files: validation, import by key, export, and the ``catalog`` commands."""

from __future__ import annotations

import json
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from usercredits import InMemoryDaoFactory, Offer, PaymentService
from usercredits.catalog import (
    CatalogError,
    CatalogFormat,
    dumps_catalog,
    export_catalog,
    import_catalog,
    loads_catalog,
    parse_catalog,
    read_catalog,
)
from usercredits.cli.commands import wonderai_catalog_file
from usercredits.dao import OfferDao

from .conftest import Invoke

PACK = {
    "key": "pack",
    "name": "Pack",
    "kind": "tokens",
    "offer_group": "credits",
    "cycle": "once",
    "price": "10.00",
    "token_count": 100,
}


def offer_dao() -> OfferDao:
    return InMemoryDaoFactory().get_offer_dao()


def catalogue(*offers: dict[str, Any]) -> Any:
    return parse_catalog({"offers": list(offers)})


def problems_of(document: Any) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(document)
    return [str(p) for p in caught.value.problems]


# -- the WonderAI example --------------------------------------------------------------


def test_wonderai_catalogue_imports_every_offer() -> None:
    offers = offer_dao()
    result = import_catalog(offers, read_catalog(wonderai_catalog_file()))
    assert len(result.created) == 20
    assert offers.count({}) == 20
    assert offers.find_by_key("scaleup-yearly-early-bird") is not None


def test_importing_a_catalogue_twice_changes_nothing() -> None:
    offers = offer_dao()
    parsed = read_catalog(wonderai_catalog_file())
    import_catalog(offers, parsed)
    before = offers.find({})
    second = import_catalog(offers, parsed)
    assert second.created == []
    assert second.updated == []
    assert len(second.unchanged) == 20
    assert offers.find({}) == before


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_imports_back_to_the_same_offers(fmt: CatalogFormat) -> None:
    source = offer_dao()
    import_catalog(source, read_catalog(wonderai_catalog_file()))
    exported = dumps_catalog(export_catalog(source), fmt)
    target = offer_dao()
    import_catalog(target, loads_catalog(exported, fmt))
    assert export_catalog(target) == export_catalog(source)
    assert import_catalog(source, loads_catalog(exported, fmt)).changed is False


# -- references by key -----------------------------------------------------------------


def test_bundle_items_refer_to_offers_by_key() -> None:
    offers = offer_dao()
    bundle = {
        **PACK,
        "key": "bundle",
        "offer_group": "plan",
        "cycle": "monthly",
        "token_count": None,
        "combined_items": [{"offer": "pack", "quantity": 3}],
    }
    import_catalog(offers, catalogue(bundle, PACK))
    pack = offers.find_by_key("pack")
    stored = offers.find_by_key("bundle")
    assert pack is not None
    assert stored is not None
    [item] = stored.combined_items
    assert str(item.offer_id) == str(pack.id)
    assert (item.offer_group, item.quantity) == ("credits", 3)


def test_bundle_items_may_send_tokens_to_another_group() -> None:
    offers = offer_dao()
    bundle = {
        **PACK,
        "key": "bundle",
        "combined_items": [{"offer": "pack", "offer_group": "bonus"}],
    }
    import_catalog(offers, catalogue(PACK, bundle))
    stored = offers.find_by_key("bundle")
    assert stored is not None
    assert stored.combined_items[0].offer_group == "bonus"


def test_unlocked_by_an_offer_key_means_its_group_and_marks_it() -> None:
    offers = offer_dao()
    vip = {**PACK, "key": "vip", "unlocked_by": [{"offer": "pack"}, "partners"]}
    import_catalog(offers, catalogue(PACK, vip))
    stored_vip, stored_pack = offers.find_by_key("vip"), offers.find_by_key("pack")
    assert stored_vip is not None
    assert stored_pack is not None
    assert stored_vip.unlocked_by == ["credits", "partners"]
    assert stored_pack.has_dependent_offers is True


def test_references_may_name_offers_already_stored() -> None:
    offers = offer_dao()
    import_catalog(offers, catalogue(PACK))
    bundle = {**PACK, "key": "bundle", "combined_items": [{"offer": "pack"}]}
    vip = {**PACK, "key": "vip", "unlocked_by": [{"offer": "pack"}]}
    result = import_catalog(offers, catalogue(bundle, vip))
    assert result.created == ["bundle", "vip"]
    assert result.updated == ["pack"]
    pack = offers.find_by_key("pack")
    assert pack is not None
    assert pack.has_dependent_offers is True


def test_a_changed_field_updates_the_offer_in_place() -> None:
    offers = offer_dao()
    import_catalog(offers, catalogue(PACK))
    first = offers.find_by_key("pack")
    result = import_catalog(offers, catalogue({**PACK, "price": "12.50"}))
    second = offers.find_by_key("pack")
    assert result.updated == ["pack"]
    assert first is not None
    assert second is not None
    assert second.id == first.id
    assert second.price == Decimal("12.50")


def test_offers_missing_from_the_file_are_left_alone() -> None:
    offers = offer_dao()
    import_catalog(offers, catalogue(PACK, {**PACK, "key": "other"}))
    import_catalog(offers, catalogue(PACK))
    assert offers.find_by_key("other") is not None


def test_a_dry_run_writes_nothing() -> None:
    offers = offer_dao()
    result = import_catalog(offers, catalogue(PACK), dry_run=True)
    assert result.created == ["pack"]
    assert offers.count({}) == 0


def test_an_unknown_reference_is_refused_and_nothing_is_written() -> None:
    offers = offer_dao()
    bundle = {**PACK, "key": "bundle", "combined_items": [{"offer": "ghost"}]}
    with pytest.raises(CatalogError) as caught:
        import_catalog(offers, catalogue(PACK, bundle))
    assert "offers[1] 'bundle', field 'combined_items[0].offer'" in str(caught.value)
    assert "'ghost'" in str(caught.value)
    assert offers.count({}) == 0


def test_an_unknown_unlocking_offer_is_refused() -> None:
    vip = {**PACK, "key": "vip", "unlocked_by": [{"offer": "ghost"}]}
    with pytest.raises(CatalogError, match=r"'vip', field 'unlocked_by\[0\]'"):
        import_catalog(offer_dao(), catalogue(vip))


def test_bundles_do_not_nest() -> None:
    inner = {**PACK, "key": "inner", "combined_items": [{"offer": "pack"}]}
    outer = {**PACK, "key": "outer", "combined_items": [{"offer": "inner"}]}
    with pytest.raises(CatalogError, match="'inner' is itself a bundle"):
        import_catalog(offer_dao(), catalogue(PACK, inner, outer))


# -- reading and validation ------------------------------------------------------------


def test_prices_are_read_as_exact_decimals_from_yaml_and_json() -> None:
    entry = "{key: a, name: A, kind: tokens, offer_group: g, cycle: once, price: 9.99}"
    from_yaml = loads_catalog(f"offers:\n  - {entry}")
    from_json = loads_catalog(
        '{"offers": [{"key": "a", "name": "A", "kind": "tokens", "offer_group": "g", '
        '"cycle": "once", "price": 0.1}]}',
        "json",
    )
    assert from_yaml.entries[0].offer.price == Decimal("9.99")
    assert from_json.entries[0].offer.price == Decimal("0.1")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"price": "abc"}, "offers[0] 'pack', field 'price': must be a number, got 'abc'"),
        ({"price": "-1"}, "field 'price': must be a finite amount of at least 0"),
        ({"cycle": "monthy"}, "field 'cycle': unknown value 'monthy'"),
        ({"kind": "gift"}, "field 'kind': unknown value 'gift'"),
        ({"token_count": -5}, "field 'token_count': must be at least 0, got -5"),
        ({"token_count": "ten"}, "field 'token_count': must be an integer, got 'ten'"),
        ({"currency": "euro"}, "field 'currency': must be a 3-letter ISO 4217 code"),
        ({"tags": "vip"}, "field 'tags': must be a list of non-empty strings"),
        ({"append_date": "yes"}, "field 'append_date': must be true or false"),
        ({"tokn_count": 3}, "offers[0] 'pack', field 'tokn_count': unknown field"),
        ({"cycle": "custom"}, "field 'custom_cycle': required with cycle 'custom'"),
        ({"custom_cycle": 60}, "field 'custom_cycle': only allowed with cycle 'custom'"),
        ({"unlocked_by": [{"plan": "x"}]}, "field 'unlocked_by[0]': must be a group name"),
        (
            {"combined_items": [{"offer": "x", "quantity": 0}]},
            "field 'combined_items[0].quantity': must be at least 1, got 0",
        ),
        ({"combined_items": [{"quantity": 2}]}, "field 'combined_items[0].offer': missing"),
        ({"key": ""}, "offers[0], field 'key': must be a non-empty string"),
    ],
)
def test_validation_errors_name_the_entry_and_the_field(
    change: dict[str, Any], expected: str
) -> None:
    assert any(expected in problem for problem in problems_of({"offers": [{**PACK, **change}]}))


def test_every_missing_required_field_is_reported() -> None:
    problems = problems_of({"offers": [{"key": "x"}]})
    for name in ("name", "kind", "offer_group", "cycle", "price"):
        assert f"offers[0] 'x', field '{name}': missing" in problems


def test_duplicate_keys_are_refused() -> None:
    problems = problems_of({"offers": [PACK, PACK]})
    assert problems == [
        "offers[1] 'pack', field 'key': duplicate key, already used by offers[0] 'pack'"
    ]


def test_a_file_that_is_not_a_catalogue_is_refused() -> None:
    with pytest.raises(CatalogError, match="not valid yaml"):
        loads_catalog("offers: [unclosed")
    with pytest.raises(CatalogError, match="must be a mapping with an 'offers' list"):
        loads_catalog("- just\n- a list\n")


def test_export_refuses_offers_without_a_key() -> None:
    offers = offer_dao()
    offers.create(Offer(name="Keyless", kind="tokens", offer_group="g", cycle="once", price=1))
    with pytest.raises(CatalogError, match=r"offer 'Keyless'.*field 'key': missing"):
        export_catalog(offers)


# -- the catalog commands --------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_catalog_import_stores_the_offers_and_reports_each_key(
    invoke: Invoke, service: PaymentService, tmp_path: Path
) -> None:
    path = write(tmp_path, "offers.yaml", yaml.safe_dump({"offers": [PACK]}))
    result = invoke(["catalog", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "pack  created" in result.stdout
    assert "1 created, 0 updated, 0 unchanged" in result.stdout
    assert service.get_dao_factory().get_offer_dao().find_by_key("pack") is not None


def test_catalog_import_twice_reports_everything_unchanged(invoke: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "wonderai.yaml"
    assert invoke(["catalog", "example", str(path)]).exit_code == 0
    assert invoke(["catalog", "import", str(path)]).exit_code == 0
    again = invoke(["catalog", "import", str(path)])
    assert again.exit_code == 0
    assert "0 created, 0 updated, 20 unchanged" in again.stdout


def test_catalog_import_dry_run_writes_nothing(
    invoke: Invoke, service: PaymentService, tmp_path: Path
) -> None:
    path = write(tmp_path, "offers.json", json.dumps({"offers": [PACK]}))
    result = invoke(["catalog", "import", "--dry-run", str(path)])
    assert result.exit_code == 0
    assert "dry run: nothing written" in result.stdout
    assert service.get_dao_factory().get_offer_dao().count({}) == 0


def test_catalog_import_of_a_missing_file_is_a_usage_error(invoke: Invoke) -> None:
    result = invoke(["catalog", "import", "no-such-file.yaml"])
    assert result.exit_code == 2
    assert "'no-such-file.yaml' does not exist" in result.stderr


def test_catalog_import_of_an_invalid_file_names_entry_and_field(
    invoke: Invoke, service: PaymentService, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        """\
        offers:
          - key: ok
            name: Fine
            kind: tokens
            offer_group: g
            cycle: once
            price: 1
          - key: broken
            name: Broken
            kind: tokens
            offer_group: g
            cycle: weekly
            price: free
        """,
    )
    result = invoke(["catalog", "import", str(path)])
    assert result.exit_code == 1
    assert "bad.yaml: offers[1] 'broken', field 'price': must be a number, got 'free'" in (
        result.stderr
    )
    assert service.get_dao_factory().get_offer_dao().count({}) == 0


def test_catalog_import_of_a_binary_file_is_a_clear_error(invoke: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "offers.yaml"
    path.write_bytes(b"\xff\xfe\x00offers")
    result = invoke(["catalog", "import", str(path)])
    assert result.exit_code == 1
    assert "offers.yaml: not UTF-8 text" in result.stderr


def test_catalog_export_writes_yaml_to_standard_output(invoke: Invoke, tmp_path: Path) -> None:
    path = write(tmp_path, "offers.yaml", yaml.safe_dump({"offers": [PACK]}))
    invoke(["catalog", "import", str(path)])
    result = invoke(["catalog", "export"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout) == {"offers": [PACK]}


def test_catalog_export_to_a_json_file(invoke: Invoke, tmp_path: Path) -> None:
    path = write(tmp_path, "offers.yaml", yaml.safe_dump({"offers": [PACK]}))
    invoke(["catalog", "import", str(path)])
    target = tmp_path / "out.json"
    result = invoke(["catalog", "export", str(target)])
    assert result.exit_code == 0
    assert "Exported 1 offers" in result.stderr
    assert json.loads(target.read_text()) == {"offers": [PACK]}


def test_catalog_export_of_an_offer_without_key_fails(
    invoke: Invoke, service: PaymentService
) -> None:
    service.get_dao_factory().get_offer_dao().create(
        Offer(name="Keyless", kind="tokens", offer_group="g", cycle="once", price=1)
    )
    result = invoke(["catalog", "export"])
    assert result.exit_code == 1
    assert "offer 'Keyless'" in result.stderr
    assert "give the offer a key" in result.stderr


def test_catalog_example_is_the_demo_catalogue(invoke: Invoke) -> None:
    result = invoke(["catalog", "example"])
    assert result.exit_code == 0
    assert len(parse_catalog(yaml.safe_load(result.stdout)).entries) == 20
