"""The trusted record: a valid one parses; every malformation is a RecordError naming the field.

Version 1 (verity parameters only) and version 2 (with the model's engine settings,
loader.images.engine_settings); the record digest that will be measured.
"""

from __future__ import annotations

import hashlib
import json
from uuid import UUID

import pytest

from loader.errors import RecordError
from loader.images.engine_settings import NO_ENGINE_SETTINGS, ModelEngineSettings
from loader.images.record import TrustedRecord, parse_record
from loader.verity import VerityParams

ROOT = "4f" * 32
GOOD = {
    "format": "appliance-verity-record",
    "version": 1,
    "name": "tiny-llama",
    "root_hash": ROOT,
    "hash_algorithm": "sha256",
    "hash_format": 1,
    "data_block_size": 4096,
    "hash_block_size": 4096,
    "data_blocks": 25600,
    "salt": "ab" * 32,
    "hash_offset": 0,
    "superblock": True,
    "uuid": "0f0e0d0c-0b0a-4908-8706-050403020100",
    "filesystem": "squashfs",
    "image_size": 25600 * 4096,
    "hash_size": (1 + 200 + 2 + 1) * 4096,
}


def encode(document: dict) -> bytes:
    return json.dumps(document).encode()


def test_valid_record() -> None:
    record = parse_record(encode(GOOD))
    assert record.digest == ROOT
    assert record.params == VerityParams(
        data_blocks=25600, salt=bytes.fromhex("ab" * 32), uuid=UUID(GOOD["uuid"])
    )
    assert (record.filesystem, record.image_size, record.hash_size) == (
        "squashfs",
        GOOD["image_size"],
        GOOD["hash_size"],
    )


def test_serialised_record_parses_back() -> None:
    record = parse_record(encode(GOOD))
    assert parse_record(record.to_json().encode()) == record
    assert json.loads(record.to_json()) == GOOD


def test_record_without_superblock() -> None:
    document = {**GOOD, "superblock": False, "uuid": None, "hash_size": 204 * 4096}
    assert parse_record(encode(document)).params.superblock is False


def changed(**fields: object) -> dict:
    return {**GOOD, **fields}


def without(key: str) -> dict:
    return {k: v for k, v in GOOD.items() if k != key}


MALFORMED = {
    "unknown key": (changed(comment="hi"), "comment"),
    "missing root": (without("root_hash"), "root_hash"),
    "missing sizes": (without("image_size"), "image_size"),
    "wrong format tag": (changed(format="verity"), "format"),
    "version 3": (changed(version=3), "version"),
    "version 0": (changed(version=0), "version"),
    "version true": (changed(version=True), "version"),
    "version as string": (changed(version="1"), "version"),
    "bool as int": (changed(data_blocks=True), "data_blocks"),
    "float as int": (changed(data_block_size=4096.0), "data_block_size"),
    "string as int": (changed(hash_offset="0"), "hash_offset"),
    "upper-case root": (changed(root_hash=ROOT.upper()), "root_hash"),
    "short root": (changed(root_hash=ROOT[:-2]), "root_hash"),
    "odd-length root": (changed(root_hash=ROOT[:-1]), "root_hash"),
    "root for sha512": (changed(root_hash="4f" * 64), "root_hash"),
    "non-hex salt": (changed(salt="zz"), "salt"),
    "salt over 256 bytes": (changed(salt="00" * 257), "salt"),
    "non-canonical uuid": (changed(uuid="0F0E0D0C-0B0A-4908-8706-050403020100"), "uuid"),
    "uuid without dashes": (changed(uuid="0f0e0d0c0b0a49088706050403020100"), "uuid"),
    "superblock without uuid": (changed(uuid=None), "uuid"),
    "uuid without superblock": (changed(superblock=False), "uuid"),
    "unknown filesystem": (changed(filesystem="ext4"), "filesystem"),
    "image size not pinned to the data": (changed(image_size=GOOD["image_size"] + 1), "image_size"),
    "hash file smaller than the tree": (changed(hash_size=4096), "hash_size"),
    "bad block size": (changed(data_block_size=1000, image_size=25600 * 1000), "data_block_size"),
    "unknown algorithm": (changed(hash_algorithm="md6"), "hash_algorithm"),
    "misaligned offset": (changed(hash_offset=100), "hash_offset"),
    "invalid model name": (changed(name="../etc"), "name"),
    "zero data blocks": (changed(data_blocks=0, image_size=0), "data_blocks"),
}


@pytest.mark.parametrize(("document", "check"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_record(document: dict, check: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_record(encode(document))
    assert caught.value.check == check


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'"record"',
        b"\xff\xfe{}",
        encode(GOOD)[:-1],
        encode(GOOD).replace(b'"hash_offset": 0', b'"hash_offset": NaN'),
        encode(GOOD).replace(b'"version": 1', b'"version": 1, "version": 1'),
        b" " * 70_000,
    ],
    ids=["empty", "array", "string", "not utf-8", "truncated", "NaN", "duplicate key", "too large"],
)
def test_not_a_record(raw: bytes) -> None:
    with pytest.raises(RecordError):
        parse_record(raw)


def test_constructing_an_inconsistent_record_fails() -> None:
    params = VerityParams(data_blocks=10, uuid=UUID(int=1))
    with pytest.raises(RecordError):
        TrustedRecord("m", bytes(32), params, "squashfs", image_size=10 * 4096 + 1, hash_size=8192)


# -- version 2: engine settings ----------------------------------------------------------------

ENGINE = {
    "max_model_len": 2048,
    "runner": "pooling",
    "dtype": "bfloat16",
    "args": ["--max-num-seqs=8", "--enable-prefix-caching", "--gpu-memory-utilization=0.85"],
}
GOOD_V2 = {**GOOD, "version": 2, "engine": ENGINE}
# `sha256sum` of GOOD_V2 as sorted, compact JSON, computed once: a change of the canonical form
# changes every measured record digest, so it must be deliberate.
GOOD_V2_RECORD_DIGEST = "b5547421cd5d157ad30fa21ddfd7475b2b47b3360f83c1e55dfd42befb962fae"


def test_version_2_record_pins_the_engine_settings() -> None:
    record = parse_record(encode(GOOD_V2))
    assert record.engine == ModelEngineSettings(
        max_model_len=2048, runner="pooling", dtype="bfloat16",
        args=("--max-num-seqs=8", "--enable-prefix-caching", "--gpu-memory-utilization=0.85"),
    )
    assert record.engine.vllm_args() == (
        "--max-model-len=2048", "--runner=pooling", "--dtype=bfloat16",
        "--max-num-seqs=8", "--enable-prefix-caching", "--gpu-memory-utilization=0.85",
    )
    assert record.version == 2
    assert json.loads(record.to_json()) == GOOD_V2
    assert parse_record(record.to_json().encode()) == record


def test_version_1_record_loads_without_engine_settings() -> None:
    record = parse_record(encode(GOOD))
    assert record.engine == NO_ENGINE_SETTINGS and record.engine.vllm_args() == ()
    assert record.version == 1


def test_version_2_without_engine_settings_is_the_version_1_record() -> None:
    plain = parse_record(encode(GOOD))
    for document in ({**GOOD, "version": 2}, {**GOOD, "version": 2, "engine": {}}):
        record = parse_record(encode(document))
        assert record == plain
        assert record.record_digest == plain.record_digest
    # Written back as version 1, which every loader reads.
    assert json.loads(plain.to_json())["version"] == 1


def test_partial_engine_settings_leave_the_rest_to_vllm() -> None:
    record = parse_record(encode({**GOOD, "version": 2, "engine": {"max_model_len": 256}}))
    assert record.engine.vllm_args() == ("--max-model-len=256",)
    assert json.loads(record.to_json())["engine"] == {
        "max_model_len": 256, "runner": None, "dtype": None, "args": [],
    }


def test_switch_can_be_turned_off() -> None:
    engine = {"args": ["--no-enable-prefix-caching", "--no-enable-chunked-prefill"]}
    record = parse_record(encode({**GOOD, "version": 2, "engine": engine}))
    assert record.engine.args == ("--no-enable-prefix-caching", "--no-enable-chunked-prefill")


def engine_changed(**fields: object) -> dict:
    return {**GOOD_V2, "engine": {**ENGINE, **fields}}


def engine_without(key: str) -> dict:
    return {**GOOD_V2, "engine": {k: v for k, v in ENGINE.items() if k != key}}


def with_args(*args: object) -> dict:
    return engine_changed(args=list(args))


# (document, the check, a text the message must hold: the flag it refuses)
MALFORMED_ENGINE = {
    # structure and types
    "engine in a version-1 record": ({**GOOD_V2, "version": 1}, "engine", "version-2"),
    "unknown engine key": (engine_changed(tensor_parallel_size=2), "engine.tensor_parallel_size",
                           "tensor_parallel_size"),
    "engine null": ({**GOOD_V2, "engine": None}, "engine", "engine"),
    "engine as a list": ({**GOOD_V2, "engine": ["--seed=1"]}, "engine", "engine"),
    "max_model_len as string": (engine_changed(max_model_len="2048"), "engine.max_model_len",
                                "max_model_len"),
    "max_model_len as bool": (engine_changed(max_model_len=True), "engine.max_model_len",
                              "max_model_len"),
    "max_model_len as float": (engine_changed(max_model_len=2048.0), "engine.max_model_len",
                               "max_model_len"),
    "max_model_len zero": (engine_changed(max_model_len=0), "engine.max_model_len",
                           "max_model_len"),
    "max_model_len negative": (engine_changed(max_model_len=-1), "engine.max_model_len",
                               "max_model_len"),
    "max_model_len huge": (engine_changed(max_model_len=(1 << 24) + 1), "engine.max_model_len",
                           "max_model_len"),
    "runner as number": (engine_changed(runner=1), "engine.runner", "runner"),
    "runner draft": (engine_changed(runner="draft"), "engine.runner", "draft"),
    "runner auto": (engine_changed(runner="auto"), "engine.runner", "auto"),
    "dtype alias half": (engine_changed(dtype="half"), "engine.dtype", "half"),
    "dtype upper case": (engine_changed(dtype="BFLOAT16"), "engine.dtype", "BFLOAT16"),
    "args as a string": (engine_changed(args="--seed=1"), "engine.args", "args"),
    "arg as a number": (with_args(8), "engine.args.0", "args"),
    "args null": (engine_changed(args=None), "engine.args", "args"),
    # flags that would weaken isolation, or are not on the allow-list
    "trust remote code": (with_args("--trust-remote-code"), "engine.args", "--trust-remote-code"),
    "no trust remote code": (with_args("--no-trust-remote-code"), "engine.args",
                             "--no-trust-remote-code"),
    "host": (with_args("--host=0.0.0.0"), "engine.args", "--host"),
    "port": (with_args("--port=80"), "engine.args", "--port"),
    "api key": (with_args("--api-key=x"), "engine.args", "--api-key"),
    "served name": (with_args("--served-model-name=other"), "engine.args",
                    "--served-model-name"),
    "model": (with_args("--model=/etc"), "engine.args", "--model"),
    "tokenizer path": (with_args("--tokenizer=/tmp/tok"), "engine.args", "--tokenizer"),
    "chat template": (with_args("--chat-template=/tmp/t.jinja"), "engine.args",
                      "--chat-template"),
    "generation config": (with_args("--generation-config=/tmp"), "engine.args",
                          "--generation-config"),
    "config file": (with_args("--config=/tmp/c.yaml"), "engine.args", "--config"),
    "logs prompts": (with_args("--enable-log-requests"), "engine.args", "--enable-log-requests"),
    "weak prefix hash": (with_args("--prefix-caching-hash-algo=xxhash"), "engine.args",
                         "--prefix-caching-hash-algo"),
    "dotted json flag": (with_args("--compilation-config.level=3"), "engine.args",
                         "--compilation-config.level"),
    "underscore spelling": (with_args("--max_num_seqs=8"), "engine.args", "--max_num_seqs"),
    "abbreviation": (with_args("--max-num=8"), "engine.args", "--max-num"),
    "alias": (with_args("--device-memory-utilization=0.5"), "engine.args",
              "--device-memory-utilization"),
    "upper case flag": (with_args("--SEED=1"), "engine.args", "--SEED"),
    # one way to pin each setting
    "max model len as an arg": (with_args("--max-model-len=5"), "engine.args", "--max-model-len"),
    "runner as an arg": (with_args("--runner=pooling"), "engine.args", "--runner"),
    "dtype as an arg": (with_args("--dtype=half"), "engine.args", "--dtype"),
    # duplicates
    "duplicate flag": (with_args("--seed=1", "--seed=2"), "engine.args", "--seed"),
    "identical duplicate": (with_args("--seed=1", "--seed=1"), "engine.args", "--seed"),
    "switch on and off": (with_args("--enable-prefix-caching", "--no-enable-prefix-caching"),
                          "engine.args", "--enable-prefix-caching"),
    # not one --flag token
    "without dashes": (with_args("max-num-seqs=8"), "engine.args", "max-num-seqs=8"),
    "single dash": (with_args("-q=awq"), "engine.args", "-q=awq"),
    "separate value": (with_args("--max-num-seqs", "8"), "engine.args", "--max-num-seqs"),
    "empty": (with_args(""), "engine.args", "--flag"),
    "bare double dash": (with_args("--"), "engine.args", "--"),
    "space inside": (with_args("--seed=1 --trust-remote-code"), "engine.args", "--seed"),
    # values
    "int zero": (with_args("--max-num-seqs=0"), "engine.args", "--max-num-seqs"),
    "int negative": (with_args("--max-num-seqs=-1"), "engine.args", "--max-num-seqs"),
    "int human readable": (with_args("--max-num-batched-tokens=8k"), "engine.args",
                           "--max-num-batched-tokens"),
    "int leading zero": (with_args("--seed=08"), "engine.args", "--seed"),
    "int missing": (with_args("--seed"), "engine.args", "--seed"),
    "int empty": (with_args("--seed="), "engine.args", "--seed"),
    "fraction zero": (with_args("--gpu-memory-utilization=0"), "engine.args",
                      "--gpu-memory-utilization"),
    "fraction above one": (with_args("--gpu-memory-utilization=1.01"), "engine.args",
                           "--gpu-memory-utilization"),
    "fraction nan": (with_args("--gpu-memory-utilization=nan"), "engine.args",
                     "--gpu-memory-utilization"),
    "fraction exponent": (with_args("--gpu-memory-utilization=9e-1"), "engine.args",
                          "--gpu-memory-utilization"),
    "choice unknown": (with_args("--kv-cache-dtype=fp4"), "engine.args", "--kv-cache-dtype"),
    "custom tokenizer": (with_args("--tokenizer-mode=custom"), "engine.args", "--tokenizer-mode"),
    "switch with value": (with_args("--enable-prefix-caching=true"), "engine.args",
                          "--enable-prefix-caching"),
    # bounds
    "too many args": (with_args(*[f"--seed={n}" for n in range(33)]), "engine.args", "33"),
    "arg too long": (with_args("--seed=" + "1" * 200), "engine.args", "characters"),
}


@pytest.mark.parametrize(
    ("document", "check", "named"), MALFORMED_ENGINE.values(), ids=MALFORMED_ENGINE.keys()
)
def test_malformed_engine_settings(document: dict, check: str, named: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_record(encode(document))
    assert caught.value.check == check
    assert named in str(caught.value)


def test_engine_settings_are_checked_when_constructed() -> None:
    with pytest.raises(RecordError, match="--trust-remote-code"):
        ModelEngineSettings(args=("--trust-remote-code",))
    with pytest.raises(RecordError) as caught:
        ModelEngineSettings(max_model_len=0)
    assert caught.value.check == "engine.max_model_len"
    params = VerityParams(data_blocks=10, uuid=UUID(int=1))
    with pytest.raises(RecordError) as caught:
        TrustedRecord("m", bytes(32), params, "squashfs", image_size=10 * 4096, hash_size=8192,
                      engine={"max_model_len": 5})  # type: ignore[arg-type]
    assert caught.value.check == "engine"


# -- the record digest -------------------------------------------------------------------------


def test_record_digest_is_the_sha256_of_the_canonical_form() -> None:
    record = parse_record(encode(GOOD_V2))
    canonical = record.canonical_bytes()
    assert json.loads(canonical) == GOOD_V2
    assert canonical == json.dumps(GOOD_V2, sort_keys=True, separators=(",", ":")).encode()
    assert record.record_digest == hashlib.sha256(canonical).hexdigest() == GOOD_V2_RECORD_DIGEST


def test_record_digest_ignores_how_the_file_is_laid_out() -> None:
    record = parse_record(encode(GOOD_V2))
    reordered = dict(reversed(list(GOOD_V2.items())))
    for raw in (
        record.to_json().encode(),
        json.dumps(reordered, indent=7).encode(),
        json.dumps(GOOD_V2, separators=(",", ":")).encode() + b"\n\n",
    ):
        assert parse_record(raw).record_digest == record.record_digest


ENGINE_CHANGES = {
    "max_model_len": engine_changed(max_model_len=2049),
    "max_model_len dropped": engine_without("max_model_len"),
    "runner": engine_changed(runner="generate"),
    "runner dropped": engine_without("runner"),
    "dtype": engine_changed(dtype="float16"),
    "dtype auto is not unset": engine_changed(dtype="auto"),
    "dtype dropped": engine_without("dtype"),
    "arg value": with_args("--max-num-seqs=9", "--enable-prefix-caching",
                           "--gpu-memory-utilization=0.85"),
    "switch turned off": with_args("--max-num-seqs=8", "--no-enable-prefix-caching",
                                   "--gpu-memory-utilization=0.85"),
    "arg added": with_args(*ENGINE["args"], "--seed=1"),
    "arg removed": with_args(*ENGINE["args"][:-1]),
    "args reordered": with_args(*reversed(ENGINE["args"])),
    "no engine settings": {**GOOD, "version": 2},
    "root hash": {**GOOD_V2, "root_hash": "50" * 32},
    "name": {**GOOD_V2, "name": "tiny-llama-2"},
}


@pytest.mark.parametrize("document", ENGINE_CHANGES.values(), ids=ENGINE_CHANGES.keys())
def test_record_digest_changes_with_any_setting(document: dict) -> None:
    assert parse_record(encode(document)).record_digest != GOOD_V2_RECORD_DIGEST
