#!/usr/bin/env bash
# The tinyworld recipe on a borrowed GPU machine, in one call: train (or continue a run), evaluate, and
# bring the run back in parts small enough for the transfer limits (at most 8 files of 16 MiB).
#
# The GPU machine starts bare and holds no prepared data, so this script moves only what training and
# evaluation read: the prepared data set without its training media (shards, tokenizers, judges, val
# media: ~45 MB instead of ~470 MB), the Python packages that machine lacks as wheels, and optionally the
# weights a continuation starts from. Training and eval run in the same call because nothing written
# there survives it. docs/generation.md ("Running tinyworld on a GPU") gives the whole procedure.
#
#   here:  scripts/gpu_tinyworld.sh pack DATA_DIR [INIT_RUN]
#            DATA_DIR: a prepared data/tinyworld-<hash> (`trimdm prepare --recipe tinyworld`)
#            INIT_RUN: a run (or checkpoint) whose weights the GPU run starts from (train.init)
#            writes gpu/ (ignored by git): data.tar.xz, wheels/, init/ (bf16 weights); ~60 MB
#   there: scripts/gpu_tinyworld.sh run OUT TOKENS [KEY=VALUE ...]
#            trains `--recipe tinyworld` for TOKENS tokens (padding counted; the H200 trains
#            0.85-1.4M tokens/s) with the overrides given, evaluates it (`trimdm eval`, overrides in
#            EVAL_ARGS), and writes OUT/run.tar.xz.NN parts and OUT/log.txt. TRAIN_S (default 420)
#            and EVAL_S (default 150) bound the two in seconds: training stopped by SIGTERM saves a
#            checkpoint, and the run is packed whether or not its eval finished (eval it here then).
#            One device command may run 600 s: keep TRAIN_S + EVAL_S + ~30 s of packing under it.
#            THROUGHPUT=STEPS first times STEPS training steps of the same configuration eagerly and
#            with train.compile=true (benchmarks/train_throughput.py) into OUT/throughput.json.
#   here:  scripts/gpu_tinyworld.sh fetch FILES_DIR RUN_DIR
#            joins the parts into RUN_DIR (weights, metrics, eval.json, report); the run reads the
#            data set from data/ as every other run does
set -euo pipefail

PART_MIB=15
WHEELS="vector-quantize-pytorch==1.32.0 einx==0.4.3 frozendict==2.5.1 loguru==0.7.3 torch-einops-utils==0.2.0
soundfile==0.14.0 cffi==2.1.1 pycparser==3.12"

die() { echo "gpu_tinyworld.sh: $*" >&2; exit 2; }

pack() {
  local data=${1:?usage: pack DATA_DIR [INIT_RUN]} init=${2:-} ckpt=""
  [[ -f $data/spec.json && -d $data/shards && -d $data/tokenizers && -d $data/judges ]] ||
    die "$data is not a prepared tinyworld directory (needs spec.json, shards/, tokenizers/, judges/)"
  if [[ -n $init ]]; then  # a checkpoint directory, or a run directory naming its latest checkpoint
    ckpt=$init
    [[ -f $ckpt/state.json ]] || ckpt=$init/checkpoints/$(cat "$init/checkpoints/latest" 2>/dev/null || true)
    [[ -f $ckpt/state.json && -f $ckpt/model.safetensors ]] || die "$init is neither a run nor a checkpoint"
  fi
  rm -rf gpu && mkdir -p gpu/wheels
  # the data set without its training media: prepare on the GPU machine sees every stage complete
  tar -cf - -C "$(dirname "$data")" \
    "$(basename "$data")"/{spec.json,shards,tokenizers,judges,raw/manifest.json,raw/images_val,raw/speech_val} |
    xz -T0 -6 > gpu/data.tar.xz
  # wheels for the packages that machine's Python 3.12 lacks (torch, numpy, tokenizers, ... are there)
  # shellcheck disable=SC2086
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d gpu/wheels $WHEELS
  if [[ -n $ckpt ]]; then
    # the weights in bf16 (half the bytes: a carry holds 64 MiB), with state.json naming that file;
    # train.init copies them into the fp32 master weights
    mkdir -p gpu/init
    "${PYTHON:-.venv/bin/python}" - "$ckpt" gpu/init <<'PY'
import json, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
from trimdm.fileio import sha256_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
weights = {k: v.bfloat16() if v.is_floating_point() else v for k, v in load_file(src / "model.safetensors").items()}
save_file(weights, dst / "model.safetensors")
state = json.loads((src / "state.json").read_text())
state["files"] = {"model.safetensors": {"bytes": (dst / "model.safetensors").stat().st_size,
                                        "sha256": sha256_file(dst / "model.safetensors")}}
(dst / "state.json").write_text(json.dumps(state))
PY
  fi
  du -sh gpu
  echo "carry: [\"gpu\"]; the run's command: bash scripts/gpu_tinyworld.sh run \$OUT TOKENS"
}

run() {
  local out=${1:?usage: run OUT TOKENS [KEY=VALUE ...]} tokens=${2:?usage: run OUT TOKENS [KEY=VALUE ...]}
  shift 2
  exec > >(tee "$out/log.txt") 2>&1
  if ! python3 -c "import vector_quantize_pytorch, soundfile" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site gpu/wheels/*.whl
  fi
  export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
  mkdir -p data && tar -xJf gpu/data.tar.xz -C data
  local init=()
  [[ -d gpu/init ]] && init=(train.init=gpu/init)
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; fi
  if [[ -n ${THROUGHPUT:-} ]]; then  # what train.compile buys on this machine, before training
    for compiled in false true; do
      python3 benchmarks/train_throughput.py --configs tinyworld --steps "$THROUGHPUT" train.batch_size=256 \
        "$@" train.compile=$compiled | tee -a "$out/throughput.json" || echo "throughput (compile=$compiled) failed"
    done
  fi
  local t0=$SECONDS rc=0
  timeout -s TERM -k 60 "${TRAIN_S:-420}" python3 -m trimdm train --recipe tinyworld --out runs/gpu \
    train.batch_size=256 train.tokens="$tokens" "${init[@]}" "$@" || rc=$?
  echo "train: exit $rc after $((SECONDS - t0)) s"
  [[ -e runs/gpu/checkpoints/latest ]] || die "training wrote no checkpoint"
  t0=$SECONDS rc=0
  # shellcheck disable=SC2086
  timeout -s TERM -k 10 "${EVAL_S:-150}" python3 -m trimdm eval --run runs/gpu ${EVAL_ARGS:-} || rc=$?
  echo "eval: exit $rc after $((SECONDS - t0)) s"
  # the final weights and everything the report needs; optimizer and rng states stay behind
  tar -cf - --exclude='optimizer.safetensors' --exclude='rng.safetensors' runs/gpu | xz -T0 -3 |
    split -b "${PART_MIB}M" -d - "$out/run.tar.xz."
  ls -l "$out"
}

fetch() {
  local files=${1:?usage: fetch FILES_DIR RUN_DIR} dest=${2:?usage: fetch FILES_DIR RUN_DIR}
  compgen -G "$files/run.tar.xz.*" >/dev/null || die "$files holds no run.tar.xz.NN parts"
  [[ -e $dest ]] && die "$dest exists; fetch writes a new run directory"
  local tmp
  tmp=$(mktemp -d)
  cat "$files"/run.tar.xz.* | tar -xJf - -C "$tmp"
  mkdir -p "$(dirname "$dest")" && mv "$tmp/runs/gpu" "$dest" && rmdir "$tmp/runs" "$tmp"
  echo "fetched $dest"
}

cmd=${1:-}
shift || true
case $cmd in
  pack|run|fetch) "$cmd" "$@" ;;
  *) die "usage: $0 pack DATA_DIR [INIT_RUN] | run OUT TOKENS [KEY=VALUE ...] | fetch FILES_DIR RUN_DIR" ;;
esac
