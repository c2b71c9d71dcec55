"""Which models Triton serves, for which modality, with which labels: built from what Triton reports.

Pure: :func:`catalog_from_triton` turns Triton's repository index and model configs into a
:class:`ModelCatalog`, and :meth:`ModelCatalog.route` decides which model serves an event. The I/O that
fetches them is :mod:`dlstream.adapters.triton.discovery`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dlstream.domain.card import CARD_PARAMETER, CardError, ModelCard, parse_card
from dlstream.domain.contract import Modality
from dlstream.domain.errors import ContractError, DeadLetterReason

READY = "READY"


@dataclass(frozen=True)
class ServedModel:
    """A model Triton serves now, with the card of its serving version."""

    name: str
    card: ModelCard
    versions: tuple[str, ...]

    @property
    def labels(self) -> list[str]:
        """Class labels, in output order."""
        return self.card.labels


@dataclass(frozen=True)
class Unavailable:
    """No model can serve the event now; it may become available."""

    model: str | None
    reason: str


Route = ServedModel | Unavailable


@dataclass(frozen=True)
class ModelCatalog:
    """The models Triton serves, as last seen.

    ``reachable`` is False when Triton could not be asked (then routing waits: an outage is not a missing
    model). ``problems`` says why a model Triton knows is not routable (no card, an invalid card).
    """

    models: Mapping[str, ServedModel] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)
    overrides: Mapping[str, str] = field(default_factory=dict)
    reachable: bool = False

    def of_modality(self, modality: Modality) -> list[ServedModel]:
        """The served models of a modality, by name."""
        return sorted((m for m in self.models.values() if m.card.modality == modality), key=lambda m: m.name)

    def default_name(self, modality: Modality) -> str | None:
        """The default model of a modality: the setting's override, else the one whose card says default
        (the first by name if several do), else the only model of the modality."""
        if modality.value in self.overrides:
            return self.overrides[modality.value]
        served = self.of_modality(modality)
        flagged = [m.name for m in served if m.card.default]
        if flagged:
            return flagged[0]
        return served[0].name if len(served) == 1 else None

    def route(self, modality: Modality, requested: str | None) -> Route:
        """The model for an event of ``modality`` naming ``requested`` (or none).

        Raises:
            ContractError: UNKNOWN_MODEL when the named model serves another modality, or when the event
                names none and the modality has several models and no default.
        """
        name = requested or self.default_name(modality)
        if name is None:
            served = [m.name for m in self.of_modality(modality)]
            if served:
                raise ContractError(
                    DeadLetterReason.UNKNOWN_MODEL,
                    f"{modality.value} has several models and no default; name one with ce_model "
                    f"({', '.join(served)})",
                )
            return Unavailable(None, f"no {modality.value} model is served")
        model = self.models.get(name)
        if model is None:
            return Unavailable(name, self.problems.get(name) or f"model {name!r} is not served")
        if model.card.modality != modality:
            raise ContractError(
                DeadLetterReason.UNKNOWN_MODEL,
                f"model {name!r} serves {model.card.modality.value} events, not {modality.value}",
            )
        return model


def card_of_config(name: str, config: Mapping[str, Any]) -> ModelCard:
    """The card a Triton model config carries in its parameters.

    Raises:
        CardError: the config carries none, or an invalid one.
    """
    parameter = (config.get("parameters") or {}).get(CARD_PARAMETER) or {}
    text = parameter.get("string_value") if isinstance(parameter, Mapping) else None
    if not text:
        raise CardError(f"model {name!r} has no dlstream card (config parameter {CARD_PARAMETER})")
    card = parse_card(text, source=f"the card of Triton model {name!r}")
    if card.name != name:
        raise CardError(f"Triton model {name!r} carries the card of {card.name!r}")
    return card


def catalog_from_triton(
    index: Sequence[Mapping[str, Any]],
    configs: Mapping[str, Mapping[str, Any]],
    *,
    overrides: Mapping[str, str] | None = None,
) -> ModelCatalog:
    """A catalog from the model versions Triton lists (``name``, ``version``, ``state`` per entry; only
    ``READY`` ones are served) and the configs of the models that have a ready version."""
    ready: dict[str, list[str]] = {}
    for entry in index:
        name, state = str(entry.get("name", "")), str(entry.get("state", ""))
        if state == READY:
            ready.setdefault(name, []).append(str(entry.get("version", "")))
    models: dict[str, ServedModel] = {}
    problems: dict[str, str] = {}
    for name, versions in ready.items():
        config = configs.get(name)
        if config is None:
            problems[name] = f"the config of model {name!r} could not be read"
            continue
        try:
            card = card_of_config(name, config)
        except CardError as exc:
            problems[name] = str(exc)
            continue
        outputs = len(card.labels)
        scored = card.task.kind in ("classification", "multilabel")
        declared = _output_width(config, card.outputs.scores) if scored else None
        if declared is not None and declared != outputs:
            problems[name] = (
                f"model {name!r} has {outputs} labels but its {card.outputs.scores} has {declared}"
            )
            continue
        ordered = tuple(sorted(versions, key=lambda v: int(v) if v.isdigit() else -1))
        models[name] = ServedModel(name, card, ordered)
    return ModelCatalog(
        models=models,
        problems=problems,
        overrides=dict(overrides or {}),
        reachable=True,
    )


def _output_width(config: Mapping[str, Any], output: str) -> int | None:
    for tensor in config.get("output") or []:
        if tensor.get("name") == output:
            dims = [int(d) for d in tensor.get("dims") or []]
            return dims[-1] if dims else None
    return None
