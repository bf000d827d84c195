#!/usr/bin/env bash
# Rebuild every bundled model (assets/models/) from the shared mini-MIAS data.
# Research use only — not a medical device.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: training_scripts/train_bundled.sh [STEP ...]

Rebuild the bundled mini-MIAS models, the ensemble, the sample patches, MANIFEST.json and
MODELS.md from the shared data (research use only — not a medical device).

Steps (default: all, in this order):
  data                        build data/mias from $SHARED/data/mini-mias (protocol v1, 20 % of
                              the women held out, seed 0, 4 jittered crops per TRAIN lesion)
  scratch_mass_calc           Task 2.1  scratch_v1, geometric augmentation, 4-fold CV
  scratch_benign_malignant    Task 2.2  scratch_v2, rot90 augmentation, balanced class weights, 4-fold CV
  vgg16_mass_calc             Task 3.1  VGG16 (ImageNet weights), cached-feature head + block5 fine-tuning, 4-fold CV
  vgg16_benign_malignant      Task 3.2  VGG16, fine-tuned, balanced class weights, 4-fold CV
  scratch_baseline_mass_calc  Task 4    scratch_v2, baseline / mass / calcification, 4-fold CV
  vgg16b4_baseline_mass_calc  Task 4    VGG16 cut after block 4 (ImageNet weights, frozen, cached
                              features, Dense(32) head), 3 classes, 4-fold CV: a second P(baseline)
  ensemble                    Task 5    five-class ensemble fitted on validation patches no member trained on
  samples                     assets/samples/ from the held-out split (16-bit PNG, labels.csv, NOTICE)
  finish                      card data statements, MANIFEST.json, mammo models verify, MODELS.md

Environment: MAMMO_SHARED (default ../shared) — folder with data/mini-mias and
weights/vgg16_imagenet_notop.weights.h5; PYTHON (default .venv/bin/python, else python3).
Intermediate runs go to runs/bundled/<name>/ (git-ignored); the final bundles are copied to
assets/models/<name>/. On a 2-core CPU the whole rebuild takes about an hour; a GPU is much
faster. Exit code: 0 done, non-zero on the first failing step.
EOF
}

ALL_STEPS=(data scratch_mass_calc scratch_benign_malignant vgg16_mass_calc vgg16_benign_malignant
           scratch_baseline_mass_calc vgg16b4_baseline_mass_calc ensemble samples finish)

for a in "$@"; do
    case "$a" in -h|--help) usage; exit 0 ;; esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${MAMMO_SHARED:-../shared}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export PYTHONHASHSEED=0

DATA=data/mias
RUNS=runs/bundled
MODELS=assets/models
WEIGHTS=$SHARED/weights/vgg16_imagenet_notop.weights.h5
# every member: the same grouped validation split (20 % of the training women, seed 0), so the
# ensemble keeps validation patches that no member trained on
COMMON=(--data "$DATA" --val-fraction 0.2 --seed 0)
# files of a run that go into the shipped bundle (plots and tables beside model + card)
BUNDLE_FILES=(model.keras card.json metrics.json history.csv folds.csv curves.png roc.png confusion_matrix.png)

steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=("${ALL_STEPS[@]}")
for s in "${steps[@]}"; do
    ok=0
    for k in "${ALL_STEPS[@]}"; do [[ "$s" == "$k" ]] && ok=1; done
    if [[ $ok -eq 0 ]]; then echo "train_bundled.sh: unknown step '$s' (see --help)" >&2; exit 2; fi
done

T0=$(date +%s)
TIMINGS=()
log() { echo "[train_bundled $(date -u +%H:%M:%S)] $*" >&2; }

ship() {  # ship NAME: copy the run's bundle files into assets/models/NAME
    local name=$1 src=$RUNS/$1 dst=$MODELS/$1
    rm -rf "$dst"
    mkdir -p "$dst"
    for f in "${BUNDLE_FILES[@]}"; do
        [[ -f "$src/$f" ]] && cp "$src/$f" "$dst/$f"
    done
    log "shipped $dst"
}

member() {  # member NAME SCRIPT ARGS...: train into runs/bundled/NAME, then ship it
    local name=$1 script=$2
    shift 2
    rm -rf "${RUNS:?}/$name"
    mkdir -p "$RUNS"
    log "training $name"
    "$PYTHON" "training_scripts/$script" "${COMMON[@]}" --out "$RUNS/$name" --name "$name" "$@"
    ship "$name"
}

run_step() {
    case "$1" in
    data)
        "$PYTHON" -m mammo_core dataset build-mias --images "$SHARED/data/mini-mias" \
            --info "$SHARED/data/mini-mias/Info.txt" --out "$DATA" --jitter 4 --seed 0 --no-progress
        ;;
    scratch_mass_calc)
        member scratch_mass_calc task_2_1_scratch_mass_calc.py --model scratch_v1 \
            --epochs 80 --patience 20 --batch-size 25 --folds 4
        ;;
    scratch_benign_malignant)
        member scratch_benign_malignant task_2_2_scratch_benign_malignant.py --model scratch_v2 \
            --class-weights balanced --epochs 80 --patience 20 --batch-size 25 --folds 4
        ;;
    vgg16_mass_calc)
        member vgg16_mass_calc task_3_1_pretrained_mass_calc.py --backbone vgg16 --mode ft \
            --weights "$WEIGHTS" --lr 1e-4 --epochs 100 --patience 20 --ft-epochs 8 --ft-lr 1e-5 --batch-size 25 \
            --folds 4
        ;;
    vgg16_benign_malignant)
        member vgg16_benign_malignant task_3_2_pretrained_benign_malignant.py --backbone vgg16 --mode ft \
            --weights "$WEIGHTS" --class-weights balanced --lr 1e-4 --epochs 100 --patience 20 --ft-epochs 8 \
            --ft-lr 1e-5 --batch-size 25 --folds 4
        ;;
    scratch_baseline_mass_calc)
        member scratch_baseline_mass_calc task_4_baseline_mass_calc.py --model scratch_v2 \
            --epochs 100 --patience 30 --batch-size 25 --folds 4
        ;;
    vgg16b4_baseline_mass_calc)
        member vgg16b4_baseline_mass_calc task_4_baseline_mass_calc.py --model transfer \
            --backbone vgg16_block4 --mode fe --weights "$WEIGHTS" --hidden 32 --lr 1e-4 --epochs 100 \
            --patience 20 --batch-size 25 --folds 4
        ;;
    ensemble)
        rm -rf "${MODELS:?}/ensemble"
        "$PYTHON" training_scripts/task_5_ensemble.py --data "$DATA" --out "$MODELS/ensemble" --seed 0 \
            --members "$MODELS/scratch_mass_calc" "$MODELS/scratch_benign_malignant" \
                      "$MODELS/vgg16_mass_calc" "$MODELS/vgg16_benign_malignant" \
                      "$MODELS/scratch_baseline_mass_calc" "$MODELS/vgg16b4_baseline_mass_calc"
        ;;
    samples)
        rm -rf assets/samples
        "$PYTHON" training_scripts/make_samples.py --data "$DATA" --out assets/samples --n 20
        ;;
    finish)
        "$PYTHON" training_scripts/models_table.py --data "$DATA" --models "$MODELS" --annotate-cards
        "$PYTHON" -m mammo_core models manifest
        "$PYTHON" -m mammo_core models verify
        "$PYTHON" training_scripts/models_table.py --data "$DATA" --models "$MODELS" --out "$MODELS/MODELS.md"
        ;;
    esac
}

for s in "${steps[@]}"; do
    t=$(date +%s)
    run_step "$s"
    dt=$(( $(date +%s) - t ))
    TIMINGS+=("$(printf '%-28s %5d s' "$s" "$dt")")
    log "step $s done in ${dt} s"
done

echo "timings (research use only — not a medical device):"
for line in "${TIMINGS[@]}"; do echo "  $line"; done
echo "  total                        $(( $(date +%s) - T0 )) s"
