"""The labelled probe prompts of a run as rows (prompt -> class, entity), for every probe."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe_bank.corpus import RunData
from probe_bank.errors import UserError
from probe_bank.probes import ProbeData
from probe_bank.records import ProbePrompt


@dataclass
class ProbeTable:
    """The labelled probe prompts as rows: class, entity index, and each entity's class."""

    probes: list[ProbePrompt]
    ids: list[str]
    y: np.ndarray
    entity: np.ndarray
    entity_labels: np.ndarray

    def data(self, X: np.ndarray) -> ProbeData:
        """These rows with features X [n_prompts, k]."""
        return ProbeData(X, self.y, self.entity, self.entity_labels)


def probe_table(run: RunData) -> ProbeTable:
    """Rows of every labelled probe prompt; the bank needs all classes 0..6."""
    probes = run.labelled_probes
    ids = sorted({p.entity_id for p in probes})
    index = {e: i for i, e in enumerate(ids)}
    entity = np.array([index[p.entity_id] for p in probes])
    y = np.array([p.label for p in probes], dtype=int)
    entity_labels = np.zeros(len(ids), int)
    entity_labels[entity] = y
    if sorted(set(y)) != list(range(7)):
        raise UserError(f"probe prompts cover classes {sorted(set(y))}; the bank needs 0..6")
    return ProbeTable(probes, ids, y, entity, entity_labels)
