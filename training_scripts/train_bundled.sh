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
                              the women held out, seed 0; TRAIN women only: 4 jittered crops per
                              lesion and up to 3 extra baseline windows per mammogram)
  vgg16b4_baseline_mass_calc  Task 4    VGG16 cut after block 4, frozen ImageNet weights, pooled
                              features + L2 logistic regression, baseline / mass / calcification
  vgg16_mass_calc             Task 3.1  VGG16 (blocks 1-4 used), frozen ImageNet weights, pooled
                              features + L2 LR
  vgg16_benign_malignant      Task 3.2  VGG16 (blocks 1-4 used), frozen ImageNet weights, pooled
                              features + L2 LR
                              (every member: pooling, C and test-time augmentation chosen on
                              out-of-fold predictions, 5 folds grouped by woman, the same folds)
  ensemble                    Task 5    five-class ensemble fitted on the members' out-of-fold
                              predictions over every training patch (with its 90 % conformal sets
                              and the OOD feature reference, docs/trust.md)
  shifts                      the acquisition-shift bench (benchmarks/shift_bench.py, every 4th
                              training patch, out of fold) -> assets/models/ensemble/shift_bench.json
  samples                     assets/samples/ from the held-out split (16-bit PNG, labels.csv, NOTICE)
  finish                      card data statements, MANIFEST.json, mammo models verify, MODELS.md

Environment: MAMMO_SHARED (default ../shared) — folder with data/mini-mias and
weights/vgg16_imagenet_notop.weights.h5; PYTHON (default .venv/bin/python, else python3);
MAMMO_FEATURE_CACHE (default runs/feature_cache) — cached pooled VGG16 features (never in git).
Intermediate runs go to runs/bundled/<name>/ (git-ignored); the final bundles are copied to
assets/models/<name>/. On a 2-core CPU the whole rebuild takes about 30-60 minutes (most of it the
VGG16 features of 8 views of every training patch, cached for reruns). Exit code: 0 done, non-zero on the first failing step.
EOF
}

ALL_STEPS=(data vgg16b4_baseline_mass_calc vgg16_mass_calc vgg16_benign_malignant ensemble shifts samples finish)

for a in "$@"; do
    case "$a" in -h|--help) usage; exit 0 ;; esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# the scripts import THIS checkout's mammo_core (a venv's editable install may point at another
# worktree: its training scripts would then run that worktree's code)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
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
# every member: the same 5 folds of the training women (seed 0); its out-of-fold predictions
# (runs/bundled/<name>/oof.npz, not shipped) are what its pooling, C and TTA and the ensemble
# are fitted on
COMMON=(--data "$DATA" --folds 5 --seed 0)
# pooled VGG16 members: frozen ImageNet backbone, every candidate pools block 4 (and maybe 2-3),
# each C grid reaches past the value it chose (a choice at the grid's edge says the grid was too
# short); never block 5: block 5 would add ~28 MB of new weights per bundle to the repository, and a
# graph without block 4 would drop ~24 MB that the previous bundles hold (git stores the change
# both ways); blocks 1-4 are byte-identical to the previous bundles' frozen ImageNet blocks
# class weights: balanced (the pooled head follows --class-weights, default the task's preset)
# training augmentation (docs/robust_inputs.md, decided on benchmarks/augment_bench.py by the rule
# written there before the run): vgg16_benign_malignant fits 4 of its 8 views per patch on a random
# acquisition change (gamma / contrast / noise / blur / rescale); the abnormal-vs-baseline member
# stays without it (its unshifted out-of-fold AUC fell 0.044), and so does vgg16_mass_calc: the
# bench's rule kept it by +0.001, but its nested out-of-fold AUC (the issue's criterion) fell
# 0.816 -> 0.793 and the ensemble's mass-vs-calcification shift rows fell (docs/robust_inputs.md)
POOLED=(--head pooled --weights "$WEIGHTS" --tta auto --class-weights balanced)
# The ensemble's factor-weight rule was changed (NLL fit -> choice on out-of-fold AUC) after an
# earlier session had seen public_test numbers of the old rule: its public_test numbers are not
# blind (the card says so; the members' are). Empty this only with a new, unseen held-out split.
ENSEMBLE_HELD_OUT_SEEN="factor-weight rule changed (NLL fit to out-of-fold AUC choice) after public_test numbers of the previous rule had been seen"
# The members were retrained (C search fitted every C from scratch instead of warm-starting, C
# grids extended past their chosen values; both decided on out-of-fold scores only) after earlier
# sessions had seen public_test numbers of the previous members: their numbers are not blind either.
MEMBERS_HELD_OUT_SEEN="retrained (C search fixed to fit every C from scratch, C grids extended; decided out of fold) after public_test numbers of the previous members had been seen"
# files of a run that go into the shipped bundle (plots and tables beside model + card)
BUNDLE_FILES=(model.keras card.json metrics.json grid.csv folds.csv roc.png confusion_matrix.png)

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

ship() {  # ship NAME [FILE...]: copy the run's bundle files (default BUNDLE_FILES) into assets/models/NAME
    local name=$1 src=$RUNS/$1 dst=$MODELS/$1
    shift
    local files=("${BUNDLE_FILES[@]}")
    [[ $# -gt 0 ]] && files=("$@")
    rm -rf "$dst"
    mkdir -p "$dst"
    for f in "${files[@]}"; do
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
    "$PYTHON" "training_scripts/$script" "${COMMON[@]}" --out "$RUNS/$name" --name "$name" "$@" \
        --held-out-seen "$MEMBERS_HELD_OUT_SEEN"
    ship "$name"
}

run_step() {
    case "$1" in
    data)
        "$PYTHON" -m mammo_core dataset build-mias --images "$SHARED/data/mini-mias" \
            --info "$SHARED/data/mini-mias/Info.txt" --out "$DATA" --jitter 4 --extra-baselines 3 \
            --seed 0 --no-progress
        ;;
    vgg16b4_baseline_mass_calc)
        member vgg16b4_baseline_mass_calc task_4_baseline_mass_calc.py --model transfer "${POOLED[@]}" \
            --backbone vgg16_block4 \
            --train-views 2 --c-grid 0.1 0.3 1 3 10 30 \
            --pool-candidates block3_pool,block4_pool:avgmax block2_pool,block3_pool,block4_pool:avgmax
        ;;
    vgg16_mass_calc)
        member vgg16_mass_calc task_3_1_pretrained_mass_calc.py "${POOLED[@]}" --backbone vgg16 \
            --train-views 8 --c-grid 0.03 0.1 0.3 1 3 10 \
            --pool-candidates block3_pool,block4_pool:avgmax block2_pool,block3_pool,block4_pool:avgmax
        ;;
    vgg16_benign_malignant)
        member vgg16_benign_malignant task_3_2_pretrained_benign_malignant.py "${POOLED[@]}" --backbone vgg16 \
            --train-views 8 --train-augment acquisition --augment-views 4 --c-grid 0.003 0.01 0.03 0.1 0.3 1 \
            --pool-candidates block4_pool:avg block3_pool,block4_pool:avgmax
        ;;
    ensemble)  # fitted into runs/bundled/ensemble (a run never writes into assets/models), then shipped
        rm -rf "${RUNS:?}/ensemble"
        "$PYTHON" training_scripts/task_5_ensemble.py --data "$DATA" --out "$RUNS/ensemble" --seed 0 \
            --members "$MODELS/vgg16b4_baseline_mass_calc" "$MODELS/vgg16_mass_calc" \
                      "$MODELS/vgg16_benign_malignant" \
            --oof "$RUNS/vgg16b4_baseline_mass_calc" "$RUNS/vgg16_mass_calc" "$RUNS/vgg16_benign_malignant" \
            --held-out-seen "$ENSEMBLE_HELD_OUT_SEEN"
        ship ensemble card.json ensemble.json ood_reference.npz metrics.json comparison.png
        ;;
    shifts)
        "$PYTHON" benchmarks/shift_bench.py --data "$DATA" --oof "$RUNS" --models "$MODELS" \
            --weights "$WEIGHTS" --every 4 --json "$MODELS/ensemble/shift_bench.json"
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
