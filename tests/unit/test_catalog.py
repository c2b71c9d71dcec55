"""Model cards, the configs generated from them, and routing by the catalog discovered from Triton."""

from __future__ import annotations

import json
import re

import pytest

from dlstream.domain.card import CARD_PARAMETER, CardError, ModelCard, parse_card, read_card
from dlstream.domain.catalog import ModelCatalog, ServedModel, Unavailable, catalog_from_triton
from dlstream.domain.contract import Modality
from dlstream.domain.errors import ContractError, DeadLetterReason
from tests.cards import card, config_of, rendered

pytestmark = pytest.mark.unit


def _catalog(*cards: ModelCard, overrides: dict[str, str] | None = None, **extra: str) -> ModelCatalog:
    index = [{"name": c.name, "version": "1", "state": "READY"} for c in cards]
    index += [{"name": n, "version": "1", "state": s} for n, s in extra.items()]
    configs = {c.name: config_of(c) for c in cards}
    return catalog_from_triton(index, configs, overrides=overrides)


def test_a_card_round_trips_and_names_what_is_wrong() -> None:
    original = card("shapes", labels=4)
    assert parse_card(original.to_json(), source="x") == original
    broken = json.loads(original.to_json())
    broken["labels"] = ["a", "a"]
    broken["modality"] = "video"
    with pytest.raises(CardError) as caught:
        parse_card(json.dumps(broken), source="shapes/1/card.json")
    message = str(caught.value)
    assert "shapes/1/card.json" in message
    assert "modality" in message
    assert "labels" in message
    with pytest.raises(CardError, match="not JSON"):
        parse_card("{", source="x")


def test_reading_a_version_without_a_card_says_so(tmp_path: object) -> None:
    from pathlib import Path

    with pytest.raises(CardError, match="no model card"):
        read_card(Path(str(tmp_path)))


def test_the_generated_config_carries_the_card_and_the_output_sizes() -> None:
    text = rendered(card("shapes", labels=4))
    assert 'name: "shapes"' in text
    assert "dims: [ 4 ]" in text
    literal = re.search(r'string_value: "((?:[^"\\]|\\.)*)"', text)
    assert literal is not None
    assert CARD_PARAMETER in text
    unescaped = literal.group(1).replace('\\"', '"').replace("\\\\", "\\")
    assert parse_card(unescaped, source="config") == card("shapes", labels=4)


def test_routing_uses_the_default_card_or_the_only_model_of_a_modality() -> None:
    catalog = _catalog(
        card("digits", default=True),
        card("imagenet"),
        card("topics", Modality.TEXT),
    )
    assert isinstance(image := catalog.route(Modality.IMAGE, None), ServedModel)
    assert image.name == "digits"
    assert isinstance(text := catalog.route(Modality.TEXT, None), ServedModel)
    assert text.name == "topics"
    assert isinstance(named := catalog.route(Modality.IMAGE, "imagenet"), ServedModel)
    assert named.labels == ["imagenet-0", "imagenet-1", "imagenet-2"]


def test_a_setting_overrides_the_default() -> None:
    catalog = _catalog(card("digits", default=True), card("imagenet"), overrides={"image": "imagenet"})
    route = catalog.route(Modality.IMAGE, None)
    assert isinstance(route, ServedModel)
    assert route.name == "imagenet"


def test_a_model_of_another_modality_or_an_ambiguous_default_is_an_unknown_model() -> None:
    catalog = _catalog(card("a"), card("b"), card("topics", Modality.TEXT))
    with pytest.raises(ContractError, match="serves text") as caught:
        catalog.route(Modality.IMAGE, "topics")
    assert caught.value.reason is DeadLetterReason.UNKNOWN_MODEL
    with pytest.raises(ContractError, match="no default"):
        catalog.route(Modality.IMAGE, None)


def test_a_model_not_served_is_unavailable() -> None:
    catalog = _catalog(card("digits"), coming="LOADING", gone="UNAVAILABLE")
    for name in ("nosuch", "coming", "gone"):
        missing = catalog.route(Modality.IMAGE, name)
        assert isinstance(missing, Unavailable)
        assert missing.reason == f"model {name!r} is not served"
    assert isinstance(catalog.route(Modality.AUDIO, None), Unavailable)


def test_models_without_a_valid_card_or_with_mismatched_outputs_are_not_routable() -> None:
    good = card("digits")
    index = [{"name": n, "version": "1", "state": "READY"} for n in ("digits", "plain", "bad", "wide")]
    bad_config = config_of(good)
    bad_config["parameters"][CARD_PARAMETER]["string_value"] = '{"name": "bad"}'
    catalog = catalog_from_triton(
        index,
        {
            "digits": config_of(good),
            "plain": {"name": "plain", "output": []},
            "bad": bad_config,
            "wide": config_of(card("wide"), outputs=5),
        },
    )
    assert list(catalog.models) == ["digits"]
    assert "no dlstream card" in catalog.problems["plain"]
    assert "modality" in catalog.problems["bad"]
    assert "3 labels" in catalog.problems["wide"]
    route = catalog.route(Modality.IMAGE, "bad")
    assert isinstance(route, Unavailable)
    assert "modality" in route.reason


def test_ready_versions_are_listed_in_order() -> None:
    model = card("digits")
    index = [
        {"name": "digits", "version": "10", "state": "READY"},
        {"name": "digits", "version": "9", "state": "READY"},
    ]
    catalog = catalog_from_triton(index, {"digits": config_of(model)})
    assert catalog.models["digits"].versions == ("9", "10")


def test_an_owners_config_must_batch_and_its_max_batch_size_goes_into_the_card() -> None:
    from dlstream.repository.add import AddError
    from dlstream.repository.add_triton import max_batch_size

    assert max_batch_size('name: "m"\nmax_batch_size: 16\ninput [ ]') == 16
    for text in ('name: "m"\ninput [ ]', 'name: "m"\nmax_batch_size: 0\n'):
        with pytest.raises(AddError, match="max_batch_size"):
            max_batch_size(text)
