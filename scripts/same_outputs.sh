#!/usr/bin/env bash
# Same outputs before and after a refactor (issue 27, item 8): run one code tree on fixed inputs and write a
# manifest of its outputs with every absolute path replaced by a placeholder, so two trees' manifests diff.
#
#   scripts/same_outputs.sh --prepare DATA              # once: the demo data both trees read (this tree's generator)
#   scripts/same_outputs.sh --model DATA MODEL_DIR      # once: a seconds-trained 2.5D whole-series model (this tree)
#   scripts/same_outputs.sh ROOT OUT DATA MODEL_DIR     # per tree; then compare OUT_before/manifest.txt, OUT_after/...
#
# ROOT: the code tree (a git worktree of the old commit, or the live tree). It runs with cwd=ROOT and PYTHONPATH=ROOT
#   first, so `import bundle` is ROOT's even where the venv has another tree installed editable (checked).
# OUT: a new folder for the outputs (raw/ the files themselves, logs/, manifest.txt).
# DATA: written by --prepare: demo/ (the synthetic demo: tiny, 12 patients, seed 1), pacs_export/ (its simulated PACS
#   export: training and validation studies, 10 % unread), deid/ (that export de-identified with the demo's
#   seed-derived key), secure/ (key, linkage table, the split by pseudonym).
# MODEL_DIR: model.pt (and grid.json, operating_point.json where the tree reads them); read, never written (checked).
# Booleans go to monai.bundle run as True/False/None (python-fire reads false/null as strings; "false" is truthy).
# Steps, all on the CPU, seed 0:
#   a. configs/mine.yaml on DATA/deid (split file, unlabelled series where the key exists), then the demo's
#      experiment datalists from it (bundle.demo.experiment.build, build_series)
#   b. the volume datalist of DATA/demo (write_volume_datalist), then inference_volume.yaml + evaluate_volume.yaml
#      (write_operating_point False, n_bootstrap 200, protocol_variants {} where the key exists)
#   c. inference_volume.yaml on one demo volume (input_image)
#   d. scripts/package_bundle.py --models-dir MODEL_DIR --no-zip, for the zoo and for MONAI Label
# The manifest: one `sha256  path` line per output file (a zip, e.g. model.pt/model.ts: one line per member), after
# replacing the venv, OUT, DATA, MODEL_DIR, ROOT (also resolved; longest first) and /tmp/<name> by <VENV>, <OUT>,
# <DATA>, <MODEL>, <ROOT>, <TMP>.
# Env: PY (default ROOT/.venv/bin/python, else /work/main/.venv/bin/python); SAME_MANIFEST_ONLY=1 (only the manifest,
#   from an existing OUT/raw); SAME_VOLUME (step c; default: the test volume with most lesions);
#   SAME_PROTOCOL_VARIANTS (default {}: none; None: the config's four protocol variants).
set -euo pipefail

if [[ "${1:-}" == "--prepare" ]]; then
  DATA=$(realpath -m "$2")
  HERE=$(cd "$(dirname "$0")/.." && pwd)
  PY=${PY:-$HERE/.venv/bin/python}; [[ -x "$PY" ]] || PY=/work/main/.venv/bin/python
  [[ -e "$DATA" ]] && { echo "$DATA exists; give a new folder" >&2; exit 1; }
  mkdir -p "$DATA/secure"
  cd "$HERE"
  PYTHONPATH="$HERE" "$PY" - "$DATA" <<'EOF'
import json, sys
from pathlib import Path
from bundle.demo.synth import generate
from bundle.demo.pacs_export import export
from bundle.demo.clinic.config import ExportConfig
from bundle.demo.run import demo_key
data = Path(sys.argv[1])
generate(data / "demo", size="tiny", seed=1, n_patients=12)
export(data / "demo", data / "pacs_export", seed=1, config=ExportConfig(p_unread=0.1), splits=("training", "validation"), workers=1)
(data / "secure" / "demo.key").write_text(demo_key(1))
EOF
  PYTHONPATH="$HERE" "$PY" -m monai.bundle run --config_file configs/deidentify.yaml --input_dir "$DATA/pacs_export/dicom" \
    --output_dir "$DATA/deid" --key_file "$DATA/secure/demo.key" --linkage_file "$DATA/secure/linkage.csv" >"$DATA/secure/deid.log" 2>&1
  PYTHONPATH="$HERE" "$PY" - "$DATA" <<'EOF'
import json, sys
from pathlib import Path
from bundle.demo.experiment import load_linkage, split_by_pseudonym
data = Path(sys.argv[1])
split = json.loads((data / "demo" / "truth.json").read_text())["split"]
out = data / "secure" / "split_pseudonyms.json"
out.write_text(json.dumps(split_by_pseudonym(split, load_linkage(data / "secure" / "linkage.csv")), indent=1))
print("prepared", data)
EOF
  exit 0
fi

if [[ "${1:-}" == "--model" ]]; then
  DATA=$(realpath "$2"); MODEL=$(realpath -m "$3")
  HERE=$(cd "$(dirname "$0")/.." && pwd)
  PY=${PY:-$HERE/.venv/bin/python}; [[ -x "$PY" ]] || PY=/work/main/.venv/bin/python
  [[ -e "$MODEL" ]] && { echo "$MODEL exists; give a new folder" >&2; exit 1; }
  WORK=$(mktemp -d); cd "$HERE"
  PYTHONPATH="$HERE" "$PY" -c "from bundle.demo.volumes import write_volume_datalist as w; \
w('$DATA/demo', '$DATA/demo/datalist_volume_train.json', ('training', 'validation'))"
  PYTHONPATH="$HERE" "$PY" -m monai.bundle run --config_file "['configs/train.yaml','configs/train_series.yaml']" \
    --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root "$WORK" \
    --dataset_dir "$DATA/demo" --data_list_file_path "$DATA/demo/datalist_volume_train.json" --context_slices 3 \
    --epochs 12 --val_interval 4 --batch_size 2 --num_samples 1 --num_workers 0 --patch_size "[64,64]" \
    --val_patch_size "[64,64]" --torch_threads 1 >"$WORK/train.log" 2>&1 || { tail -20 "$WORK/train.log" >&2; exit 1; }
  mkdir -p "$MODEL" && cp "$WORK/models/model.pt" "$WORK/models/grid.json" "$MODEL/" && rm -rf "$WORK"
  echo "model in $MODEL"; exit 0
fi

[[ $# -eq 4 ]] || { echo "usage: $0 ROOT OUT DATA MODEL_DIR | --prepare DATA | --model DATA MODEL_DIR" >&2; exit 2; }
ROOT=$(realpath "$1"); OUT=$(realpath -m "$2"); DATA=$(realpath "$3"); MODEL=$(realpath "$4")
PY=${PY:-$ROOT/.venv/bin/python}; [[ -x "$PY" ]] || PY=/work/main/.venv/bin/python
ONLY=${SAME_MANIFEST_ONLY:-}  # 1: only rewrite OUT/manifest.txt from an earlier run's OUT/raw
if [[ -n "$ONLY" ]]; then [[ -d "$OUT/raw" ]] || { echo "no $OUT/raw" >&2; exit 1; }
else [[ -e "$OUT" ]] && { echo "$OUT exists; give a new folder" >&2; exit 1; }; fi
for d in "$DATA/demo" "$DATA/deid" "$DATA/secure" "$MODEL/model.pt"; do [[ -e "$d" ]] || { echo "missing $d" >&2; exit 1; }; done
RAW=$OUT/raw; LOG=$OUT/logs
cd "$ROOT"
export PYTHONPATH="$ROOT" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 CUDA_VISIBLE_DEVICES="" PYTHONHASHSEED=0
got=$("$PY" -c "import bundle, os; print(os.path.dirname(os.path.dirname(os.path.realpath(bundle.__file__))))")
[[ "$got" == "$ROOT" ]] || { echo "import bundle resolves to $got, not $ROOT" >&2; exit 1; }
model_sum() { (cd "$MODEL" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
model_before=$(model_sum)
if [[ -z "$ONLY" ]]; then
mkdir -p "$RAW" "$LOG"
has_key() { grep -q "^$2:" "configs/$1"; }
fail() { echo "FAILED: $1 (see $LOG/$1.log)" >&2; tail -20 "$LOG/$1.log" >&2; exit 1; }
run_bundle() { local log=$1; shift; "$PY" -m monai.bundle run "$@" >"$LOG/$log.log" 2>&1 || fail "$log"; }
CPU=("--device" "\$torch.device('cpu')")
echo "tree $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ', uncommitted changes'))" | tee "$LOG/tree.txt"

# a. mining, then the demo's experiment datalists
extra=(); has_key mine.yaml unlabelled && extra=(--unlabelled True)
run_bundle mine --config_file configs/mine.yaml --source_dir "$DATA/deid" --output_dir "$RAW/mined" \
  --split_file "$DATA/secure/split_pseudonyms.json" --progress False --workers 1 "${extra[@]}"
"$PY" - "$DATA" "$RAW" >"$LOG/experiment.log" 2>&1 <<'EOF' || fail experiment
import sys
from pathlib import Path
import bundle.demo.experiment as ex
data, raw = Path(sys.argv[1]), Path(sys.argv[2])
ex.build(data / "demo", raw / "mined" / "datalist.json", raw / "experiment", data / "secure" / "linkage.csv")
if hasattr(ex, "build_series") and (raw / "mined" / "datalist_volumes.json").is_file():
    ex.build_series(data / "demo", raw / "mined" / "datalist_volumes.json", raw / "experiment_series", data / "secure" / "linkage.csv")
EOF
echo "a. mined: $(ls "$RAW/mined" | tr '\n' ' ')"

# b. volume inference + evaluation
"$PY" -c "from bundle.demo.volumes import write_volume_datalist as w; print(w('$DATA/demo'))" >"$LOG/volume_datalist.log" 2>&1 || fail volume_datalist
cp "$DATA/demo/datalist_volume.json" "$RAW/datalist_volume.json"
extra=(); has_key evaluate_volume.yaml protocol_variants && extra=(--protocol_variants "${SAME_PROTOCOL_VARIANTS:-{\}}")
run_bundle evaluate_volume --config_file "['configs/inference_volume.yaml','configs/evaluate_volume.yaml']" \
  --ckpt_dir "$MODEL" --dataset_dir "$DATA/demo" --volume_datalist_file "$DATA/demo/datalist_volume.json" \
  --output_dir "$RAW/eval" --write_operating_point False --n_bootstrap 200 --seed 0 "${CPU[@]}" "${extra[@]}"
echo "b. eval: $(ls "$RAW/eval" | tr '\n' ' ')"

# c. inference on one volume
VOL=${SAME_VOLUME:-$("$PY" -c "import json; t=json.load(open('$DATA/demo/truth.json')); print(max(sorted((p['patient_id'] for p in t['patients'] if t['split'][p['patient_id']] == 'test')), key=lambda i: len(next(p for p in t['patients'] if p['patient_id'] == i)['lesions'])))")}
run_bundle inference_volume --config_file configs/inference_volume.yaml --ckpt_dir "$MODEL" --dataset_dir "$DATA/demo" \
  --input_image "$DATA/demo/$VOL/t1c.nii.gz" --output_dir "$RAW/infer" "${CPU[@]}"
echo "c. inference on $VOL: $(ls "$RAW/infer" | tr '\n' ' ')"

# d. packaging
for target in zoo monailabel; do
  "$PY" scripts/package_bundle.py --target "$target" --out "$RAW/package_$target" --models-dir "$MODEL" --no-zip \
    >"$LOG/package_$target.log" 2>&1 || fail "package_$target"
done
echo "d. packaged: $(find "$RAW"/package_* -type f | wc -l) files"

[[ "$(model_sum)" == "$model_before" ]] || { echo "MODEL_DIR $MODEL was written to" >&2; exit 1; }
fi

# manifest: paths -> placeholders, zip members hashed one by one
"$PY" - "$RAW" "$OUT/manifest.txt" "$OUT" "$DATA" "$MODEL" "$ROOT" <<'EOF'
import hashlib, io, os, re, sys, zipfile
from pathlib import Path
raw, manifest = Path(sys.argv[1]), Path(sys.argv[2])
subs = []
# the venv first: it may sit inside ROOT (/work/main/.venv), and TorchScript's debug info names its site-packages files
for tag, p in zip(("VENV", "OUT", "DATA", "MODEL", "ROOT"), [sys.prefix] + sys.argv[3:7]):
    for form in {p, os.path.realpath(p)}:
        subs.append((form.encode(), f"<{tag}>".encode()))
subs.sort(key=lambda s: -len(s[0]))  # longest first: OUT may sit inside ROOT
tmp = re.compile(rb"/tmp/[A-Za-z0-9_.\-]+")

def norm(b: bytes) -> bytes:
    for a, r in subs:
        b = b.replace(a, r)
    return tmp.sub(b"<TMP>", b)

def digest(b: bytes) -> str:
    return hashlib.sha256(norm(b)).hexdigest()

lines = []
for f in sorted(p for p in raw.rglob("*") if p.is_file()):
    rel = f.relative_to(raw).as_posix()
    data = f.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for m in sorted(z.namelist()):
                lines.append(f"{digest(z.read(m))}  {rel}!{m}")
    else:
        lines.append(f"{digest(data)}  {rel}")
manifest.write_text("\n".join(lines) + "\n")
print(f"manifest: {len(lines)} entries -> {manifest}")
EOF
