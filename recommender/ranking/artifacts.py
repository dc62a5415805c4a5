"""Versioned model artifacts: ``models/<version>/`` with a JSON manifest, and ``models/current``.

A version folder is written under a temporary name and renamed when complete; ``current``
is a symlink replaced atomically, so a reader never sees half a model. ``joblib.load`` runs
code from the file, so only folders inside the system's own models directory whose files
match the manifest's checksums are loaded, memory-mapped so server workers share one copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import scipy.sparse as sp

from ..data.catalog import Catalog, parse_catalog
from ..data.ids import IdMap
from ..data.life_stages import LifeStageRules, parse_life_stages
from ..exceptions import ArtifactError
from .acquisition import AcquisitionRanker
from .calibration import Calibrator
from .cf import CFModel
from .config import TrainConfig
from .ownership import OwnershipModel
from .popularity import AcquisitionRates

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CURRENT = "current"
MANIFEST = "manifest.json"
_FILES = ("cf.joblib", "ids.joblib", "rates.joblib", "catalog.toml", "life_stages.toml")
_ACQUISITION = "acquisition.joblib"
_OWNERSHIP = "ownership.joblib"
SERVABLE = ("hybrid", "acquisition", "ownership")
_LIBRARIES = ("implicit", "numpy", "scipy", "pandas", "joblib", "flask")


@dataclass
class TrainedModel:
    """Everything the offer engine needs, as trained together."""

    cf: CFModel
    rates: AcquisitionRates
    catalog: Catalog
    stages: LifeStageRules
    config: TrainConfig
    catalog_text: str
    stages_text: str
    acquisition: AcquisitionRanker | None = None
    served: str = "hybrid"
    ownership: OwnershipModel | None = None
    calibrator: Calibrator | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.manifest.get("version", "unsaved")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def save(model: TrainedModel, models_dir: str | Path, manifest: dict[str, Any],
         make_current: bool = True) -> Path:
    """Write a new version folder, then (optionally) point ``current`` at it."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)
    version = manifest.get("version") or (
        created.strftime("%Y%m%dT%H%M%S%fZ") + "-" + manifest["data"]["fingerprint"][:8]
    )
    if not _VERSION_NAME.fullmatch(version) or version == CURRENT:
        raise ArtifactError(f"invalid model version name {version!r}: use letters, digits, "
                            "'.', '_' and '-', not starting with '.' and not 'current'")
    final = models_dir / version
    if final.exists():
        raise ArtifactError(f"model version {version} already exists in {models_dir}")
    partial = models_dir / f".{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        state = model.cf.to_state()
        joblib.dump(state, partial / "cf.joblib")
        joblib.dump({"customers": model.cf.customers.external_ids,
                     "products": model.cf.products.external_ids}, partial / "ids.joblib")
        joblib.dump({"overall": model.rates.overall, "by_stage": model.rates.by_stage,
                     "kind": model.rates.kind,
                     "calibration": model.calibrator.to_state() if model.calibrator else None},
                    partial / "rates.joblib")
        (partial / "catalog.toml").write_text(model.catalog_text, encoding="utf-8")
        (partial / "life_stages.toml").write_text(model.stages_text, encoding="utf-8")
        files = list(_FILES)
        if model.acquisition is not None:
            joblib.dump(model.acquisition.to_state(), partial / _ACQUISITION)
            files.append(_ACQUISITION)
        if model.ownership is not None:
            joblib.dump(model.ownership.to_state(), partial / _OWNERSHIP)
            files.append(_OWNERSHIP)
        if model.served not in SERVABLE or _lacks(model, model.served):
            raise ArtifactError(f"cannot serve {model.served!r}: not a trained ranker")
        full = {
            **manifest, "format_version": FORMAT_VERSION, "version": version,
            "created_at": created.isoformat(), "parameters": model.config.to_dict(),
            "catalog_version": model.catalog.version, "life_stages_version": model.stages.version,
            "libraries": library_versions(), "served": model.served,
            "files": {name: _sha256(partial / name) for name in files},
        }
        (partial / MANIFEST).write_text(json.dumps(full, indent=2, ensure_ascii=False),
                                        encoding="utf-8")
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    model.manifest = full
    if make_current:
        set_current(models_dir, version)
    log.info("saved model version %s to %s", version, final)
    return final


def set_current(models_dir: str | Path, version: str) -> None:
    """Point ``models/current`` at a version, atomically (symlink + rename)."""
    models_dir = Path(models_dir)
    if not (models_dir / version / MANIFEST).is_file():
        raise ArtifactError(f"no model version {version!r} in {models_dir}")
    temporary = models_dir / f".{CURRENT}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(version)
    os.replace(temporary, models_dir / CURRENT)


def record_metrics(models_dir: str | Path, metrics: dict[str, Any], data_fingerprint: str,
                   version: str = CURRENT) -> Path:
    """Store evaluation metrics in a version's manifest, if it was trained on the same data.

    The manifest is rewritten atomically; model files and their checksums are untouched.
    """
    folder = resolve(models_dir, version)
    path = folder / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    trained_on = manifest.get("data", {}).get("fingerprint")
    if trained_on != data_fingerprint:
        raise ArtifactError(f"model {manifest.get('version')} was trained on other data "
                            f"(fingerprint {str(trained_on)[:8]}, these extracts "
                            f"{data_fingerprint[:8]}); its metrics were left unchanged")
    manifest["metrics"] = metrics
    partial = folder / f".{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    partial.replace(path)
    return path


def resolve(models_dir: str | Path, version: str = CURRENT) -> Path:
    """The folder of a version (``current`` by default), refusing paths outside ``models_dir``."""
    root = Path(models_dir).resolve()
    candidate = (root / version).resolve()
    if candidate.parent != root:
        raise ArtifactError(f"model version {version!r} is not a folder inside {root}")
    if not (candidate / MANIFEST).is_file():
        hint = " (run `nbo train` first)" if version == CURRENT else ""
        raise ArtifactError(f"no model at {root / version}: {MANIFEST} not found{hint}")
    return candidate


def _load_typed(path: Path, expected: type) -> Any:
    try:
        value = joblib.load(path, mmap_mode="r")
    except Exception as exc:  # joblib raises many kinds on a corrupt file
        raise ArtifactError(f"cannot load {path}: {exc}") from exc
    if not isinstance(value, expected):
        raise ArtifactError(f"{path} holds {type(value).__name__}, expected {expected.__name__}")
    return value


def load(models_dir: str | Path, version: str = CURRENT) -> TrainedModel:
    """Load and verify a version: manifest, checksums, shapes and types."""
    folder = resolve(models_dir, version)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{folder / MANIFEST} is not readable JSON: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{folder}: artifact format {manifest.get('format_version')!r} is not"
                            f" supported (expected {FORMAT_VERSION}); retrain with `nbo train`")
    listed = manifest.get("files", {})
    for name in sorted(set(_FILES) | set(listed)):
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{folder}: {name} is missing")
        if _sha256(path) != listed.get(name):
            raise ArtifactError(f"{folder}: {name} does not match its checksum in {MANIFEST}")
    ids = _load_typed(folder / "ids.joblib", dict)
    customers = IdMap.saved(np.asarray(ids["customers"]), "customer")
    products = IdMap.saved(np.asarray(ids["products"]), "product")
    catalog_text = (folder / "catalog.toml").read_text(encoding="utf-8")
    stages_text = (folder / "life_stages.toml").read_text(encoding="utf-8")
    catalog = parse_catalog(catalog_text, str(folder / "catalog.toml"))
    stages = parse_life_stages(stages_text, str(folder / "life_stages.toml"))
    if catalog.ids != products:
        raise ArtifactError(f"{folder}: the stored catalog does not match the model's products")
    state = _load_typed(folder / "cf.joblib", dict)
    if not sp.issparse(state.get("user_items")):
        raise ArtifactError(f"{folder}: cf.joblib has no customer x product matrix")
    try:
        cf = CFModel.from_state(state, customers, products)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{folder}: cf.joblib is inconsistent: {exc}") from exc
    rates = _load_typed(folder / "rates.joblib", dict)
    acquisition = AcquisitionRates(overall=np.asarray(rates["overall"]),
                                   by_stage=np.asarray(rates["by_stage"]),
                                   kind=rates.get("kind", "take_up"))
    if acquisition.by_stage.shape != (len(stages.stages), len(products)):
        raise ArtifactError(f"{folder}: life-stage rates do not match stages x products")
    config = TrainConfig.from_dict(manifest["parameters"], f"{folder / MANIFEST} parameters")
    ranker = None
    if _ACQUISITION in listed:
        state = _load_typed(folder / _ACQUISITION, dict)
        try:
            ranker = AcquisitionRanker.from_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{folder}: {_ACQUISITION} is inconsistent: {exc}") from exc
        if list(ranker.space.products) != list(products.external_ids):
            raise ArtifactError(f"{folder}: the acquisition ranker's products do not match")
    ownership = None
    if _OWNERSHIP in listed:
        try:
            ownership = OwnershipModel.from_state(_load_typed(folder / _OWNERSHIP, dict))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{folder}: {_OWNERSHIP} is inconsistent: {exc}") from exc
        if list(ownership.products) != list(products.external_ids):
            raise ArtifactError(f"{folder}: the propensity-to-own model's products do not match")
    calibration = rates.get("calibration")
    calibrator = Calibrator.from_state(calibration) if calibration else None
    served = manifest.get("served", "hybrid")
    model = TrainedModel(cf=cf, rates=acquisition, catalog=catalog, stages=stages, config=config,
                         catalog_text=catalog_text, stages_text=stages_text, acquisition=ranker,
                         served=served, ownership=ownership, calibrator=calibrator,
                         manifest=manifest)
    if served not in SERVABLE or _lacks(model, served):
        raise ArtifactError(f"{folder}: manifest serves {served!r}, which this folder lacks")
    log.info("loaded model version %s from %s (serving %s)", manifest["version"], folder, served)
    return model


def _lacks(model: TrainedModel, served: str) -> bool:
    """Whether the model has no fitted part for the ranker it would serve."""
    return (served == "acquisition" and model.acquisition is None) or (
        served == "ownership" and model.ownership is None)
