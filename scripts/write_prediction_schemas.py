"""Write the JSON Schema of each task's prediction ``data`` to ``docs/schemas/`` (``make docs``)."""

from __future__ import annotations

import json
from pathlib import Path

from dlstream.domain.contract import prediction_schemas

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"


def main() -> None:
    """One file per task: ``prediction-data.<task>.schema.json``."""
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    for task, schema in prediction_schemas().items():
        (SCHEMAS / f"prediction-data.{task}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")


if __name__ == "__main__":
    main()
