"""The ModelSource of model images: name, trusted record, expected digest, then verification.

Development and CI verify in userspace into a private copy (`materialize_verified`, the
default); the VM passes `ActivatorClient` (kernel dm-verity and a read-only mount, done by the
privileged activator service) or, in a privileged process, `DmVerityActivator().activate`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from loader.errors import ExpectedDigestMismatchError
from loader.images.model_image import (
    ModelImage,
    Progress,
    VerifiedModel,
    load_record,
    materialize_verified,
    resolve_model_image,
)
from loader.images.record import TrustedRecord
from loader.lifecycle.steps import CheckedRequest, LoadRequest, OperationContext
from loader.settings import LoaderSettings


@dataclass(frozen=True)
class CheckedModel:
    """A model whose name resolved and whose record is pinned, not yet verified."""

    image: ModelImage
    record: TrustedRecord

    @property
    def model(self) -> str:
        return self.image.name

    @property
    def digest(self) -> str:
        return self.record.digest


class Materialize(Protocol):
    """`materialize_verified`, `DmVerityActivator.activate` or `ActivatorClient`."""

    def __call__(
        self, image: ModelImage, record: TrustedRecord, work_dir: Path, *,
        progress: Progress | None = None,
    ) -> VerifiedModel: ...


class VerifiedModels:
    """Steps 1-3 (`check`) and 5 (`verify`) of the load, over `models_dir` and `roothash_dir`."""

    def __init__(
        self, settings: LoaderSettings, materialize: Materialize = materialize_verified
    ) -> None:
        self._settings = settings
        self._materialize = materialize

    def check(self, request: LoadRequest) -> CheckedModel:
        # 1. The name resolves inside the models directory: no traversal, no symlink escape.
        image = resolve_model_image(self._settings.models_dir, request.model)
        # 2. The trusted record pins the root hash and every verity parameter.
        record = load_record(self._settings.roothash_dir, request.model)
        # 3. A digest named by the request must be the pinned one. Constant time, although the
        #    pinned digest is no secret: a rule kept without exceptions needs no review.
        expected = request.expected_digest
        if expected is not None and not hmac.compare_digest(expected, record.digest):
            raise ExpectedDigestMismatchError(
                f"model {request.model} is pinned to another digest",
                check="expected digest", expected=expected, actual=record.digest,
            )
        return CheckedModel(image, record)

    def verify(self, checked: CheckedRequest, context: OperationContext) -> VerifiedModel:
        # The lifecycle passes back what `check` returned.
        if not isinstance(checked, CheckedModel):
            raise TypeError(f"expected a CheckedModel from check(), got {type(checked).__name__}")
        # 5. Verify every block into a private copy; progress feeds the status.
        context.report(0.0, "verifying 0%")
        return self._materialize(
            checked.image, checked.record, self._settings.work_dir,
            progress=lambda done: context.report(done, f"verifying {done:.0%}"),
        )
