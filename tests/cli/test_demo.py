"""``usercredits demo``: the WonderAI story and the facts it must show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from usercredits.cli import main

from .conftest import needs_mongo


def run_demo(*args: str) -> str:
    result = CliRunner().invoke(
        main, [*args, "demo"] if args[:1] == ("--rich",) else ["demo", *args]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def story() -> str:
    return run_demo()


def chapter(story: str, number: int) -> list[str]:
    """The lines of one chapter, each with its runs of spaces collapsed."""
    text = story.split(f"== {number}. ", 1)[1].split("\n== ", 1)[0]
    return [" ".join(line.split()) for line in text.splitlines()]


def has(lines: list[str], fragment: str) -> bool:
    return any(fragment in line for line in lines)


def test_the_catalogue_is_imported_and_vip_offers_are_hidden_from_visitors(story: str) -> None:
    lines = chapter(story, 1)
    assert has(lines, "Imported 20 offers from wonderai.yaml")
    assert has(lines, "tokens-10k ai-tokens once 80.00 USD 10,000")
    assert has(lines, "scaleup-yearly-early-bird scaleup yearly 2990.00 USD 600,000")
    assert not any(line.startswith("vip-") for line in lines)
    assert has(lines, "With env_tags=['early-bird'] the storefront shows 10 offers")


def test_a_free_plan_is_paid_at_once(story: str) -> None:
    lines = chapter(story, 2)
    assert has(lines, "paid at once (Free subscription succeeded)")
    assert has(lines, "Alice gets 500 AI tokens until 2025-02-15 09:00")


def test_an_order_waits_for_the_operator_then_unlocks_and_overrides(story: str) -> None:
    lines = chapter(story, 3)
    assert has(lines, "still pending (Awaiting manual validation)")
    assert has(lines, "approves the payment: paid. Bob gets 10,000 AI tokens until 2025-02-15")
    assert has(lines, "vip-tokens-10k * ai-tokens once 60.00 USD 10,000")
    assert has(lines, "* vip-tokens-10k: unlocked, replaces tokens-10k (weight 10)")
    assert has(lines, "* vip-growth: unlocked by business, scaleup")
    assert not any(line.startswith("tokens-10k ") for line in lines)


def test_a_declined_payment_grants_nothing_and_the_heavier_override_wins(story: str) -> None:
    lines = chapter(story, 4)
    assert has(lines, "refused (Card declined by the bank); no tokens granted (balance 0)")
    assert has(lines, "operator approves: paid. Carol gets 600,000 AI tokens until 2026-01-15")
    assert has(lines, "* scaleup-tokens-10k: unlocked, replaces tokens-10k (weight 20)")
    assert not any(line.startswith("vip-tokens-10k") for line in lines)


def test_a_bundle_becomes_child_orders(story: str) -> None:
    lines = chapter(story, 5)
    assert has(lines, "- tokens-10k to ai-tokens: 20,000 tokens, until 2025-02-20 09:00")
    assert has(lines, "- vip-support to vip-support: 0 tokens, until 2025-02-20 09:00")
    assert has(lines, "Bob's balance: 32,000 AI tokens")


def test_consumption_is_refused_safely_and_idempotent(story: str) -> None:
    lines = chapter(story, 6)
    assert has(lines, "Alice uses 350 tokens: 150 left")
    assert has(lines, "refused (user 'alice' has 150 tokens in 'ai-tokens'; 300 requested)")
    assert has(lines, "balance still 150")
    assert has(lines, "the same ledger line, nothing more consumed: 24,000 left")
    assert has(lines, "tokens-10k 50 2025-02-15 09:00 10,000 2,000")
    assert has(lines, "tokens-10k 50 2025-02-20 09:00 20,000 20,000")
    assert has(lines, "tokens-2k 50 never 2,000 2,000")


def test_a_promotion_burns_first_a_hold_is_captured_for_less_and_a_grant_voided(
    story: str,
) -> None:
    lines = chapter(story, 7)
    assert has(lines, "Alice gets a winter promotion: 300 AI tokens until 2025-02-14")
    assert has(lines, "promotional 10 2025-02-14 09:00 300 200")
    assert has(lines, "tokens-500 50 2025-02-15 09:00 500 150")
    assert has(lines, "reserves 5,000 tokens: balance 555,000, available 550,000")
    assert has(lines, "The job used 3,200 tokens")
    assert has(lines, "Balance 551,800, available 551,800")
    assert has(lines, "by mistake: 25,000")
    assert has(lines, "The grant is voided: 24,000 again")


def test_the_clock_moves_forward_to_expiry_warnings(story: str) -> None:
    lines = chapter(story, 8)
    assert has(lines, "Expiry run at 2025-02-10 09:00 UTC")
    assert has(lines, "orders expired 0")
    assert has(lines, "alice ai-tokens low_balance 2025-02-15 09:00 350")
    assert has(lines, "bob business expiring 2025-02-15 09:00 0")
    assert has(lines, "alice ai-tokens tokens_expiring 2025-02-14 09:00 200")
    assert has(lines, "bob ai-tokens tokens_expiring 2025-02-15 09:00 2,000")


def test_expired_grants_lose_exactly_their_unused_tokens(story: str) -> None:
    lines = chapter(story, 9)
    assert has(lines, "orders expired 4")
    assert has(lines, "tokens removed from ai-tokens 2,350")
    assert has(lines, "offer groups removed 3")
    assert has(lines, "A second run changes nothing: 0 orders expired, 0 tokens removed")
    assert has(
        lines, "Offers unlocked for Bob now: 0 (his Business plan has ended); Carol still has 3"
    )


def test_the_final_balances_and_orders(story: str) -> None:
    lines = chapter(story, 10)
    assert has(lines, "alice (none) 0 -")
    assert has(lines, "bob ai-tokens 22,000 never")
    assert has(lines, "carol ai-tokens 551,800 2026-01-15 09:00")
    assert has(lines, "bob business-monthly expired 99.00 USD 0 2025-02-15")
    assert has(lines, "carol tokens-10k (item) paid - 600,000 2026-01-15")


def test_the_readme_shows_the_story_as_it_is_printed(story: str) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    excerpt = readme.split("```text\n== 9.", 1)[1].split("```", 1)[0]
    assert "== 9." + excerpt in story


def test_the_story_is_the_same_on_every_run(story: str) -> None:
    assert run_demo() == story


def test_the_story_renders_rich_tables_on_request(story: str) -> None:
    rich = run_demo("--rich")
    assert "───" in rich
    assert re.search(r"tokens removed from ai-tokens\s+2,350", rich)


@needs_mongo
def test_the_same_story_runs_on_mongomock(story: str) -> None:
    assert run_demo("--backend", "mongomock") == story


def test_backend_and_uri_are_exclusive() -> None:
    result = CliRunner().invoke(
        main, ["demo", "--backend", "mongomock", "--mongo-uri", "mongomock://localhost"]
    )
    assert result.exit_code == 2
    assert "either --backend or --mongo-uri" in result.stderr


def test_the_demo_ignores_the_mongo_uri_of_the_environment(story: str) -> None:
    result = CliRunner(env={"USERCREDITS_MONGO_URI": "mongodb://198.51.100.1:1/prod"}).invoke(
        main, ["demo"]
    )
    assert result.exit_code == 0
    assert result.stdout == story
