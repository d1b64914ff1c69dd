#!/usr/bin/env bash
# Spec-Bench-style evaluation: every method answers the same questions, then speed and equality
# reports against the AR baseline. Edit the settings below (or set any of them in the
# environment), then run from the repository root or from inference/:
#
#   bash inference/eval.sh                                   # everything, all 480 questions
#   PER_TASK=8 MAX_NEW_TOKENS=128 bash inference/eval.sh     # the 48-question run
#   METHODS="ar sd2_chain" QUESTION_END=4 bash inference/eval.sh
#   NUM_GPUS_TOTAL=8 bash inference/eval.sh                  # each method on 8 GPU workers (Ray)
#
# Answers go to $ANSWERS/<model-id>.jsonl; an interrupted run resumes where it stopped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---- settings -------------------------------------------------------------------------------
TARGET=${TARGET:-$ROOT/models/smollm2-135m-instruct}     # target checkpoint
DRAFT=${DRAFT:-$ROOT/models/sd2-draft-soft-12}           # SD2 draft (also SpS's draft, at its deepest exit)
DATASTORE=${DATASTORE:-$ROOT/models/rest/sharegpt-smollm2.npz}  # REST datastore
EAGLE_HEAD=${EAGLE_HEAD:-$ROOT/models/eagle-smollm2-135m}  # EAGLE head (train/scripts/train_eagle.sh trains it)
MEDUSA_HEADS=${MEDUSA_HEADS:-$ROOT/models/medusa-smollm2-135m}  # Medusa heads (train/scripts/train_medusa.sh)
HYDRA_HEADS=${HYDRA_HEADS:-$ROOT/models/hydra-smollm2-135m}     # Hydra heads (train/scripts/train_hydra.sh)
MODEL_NAME=${MODEL_NAME:-smollm2-135m}                   # prefix of every model-id
DTYPE=${DTYPE:-float32}                                  # float32 | bfloat16 | float16
DRAFT_DTYPE=${DRAFT_DTYPE-bfloat16}                      # SpS draft dtype ('' = the target's); the target
                                                         # verifies in DTYPE, so output is unchanged
SD2_DRAFT_DTYPE=${SD2_DRAFT_DTYPE-}                      # SD2 draft dtype; empty: int8 on a CPU, bfloat16 on CUDA
# SD2's defaults are its fastest measured setting on 2 CPU cores in float32 (README, "SD2 now"):
# lookup-first of 3 and a tree of 3 exit-6 nodes keep every verification pass at <= 4 rows.
LOOKUP_TOKENS=${LOOKUP_TOKENS:-3}                        # SD2 (chain and tree): prompt lookup of up to N tokens (0: none)
LOOKUP_FIRST=${LOOKUP_FIRST:-1}                          # 1: where lookup finds a continuation, SD2 verifies it alone
                                                         # (0: as an extra branch beside the draft's)
SD2_TREE=${SD2_TREE:-"--total-token 4 --depth 2 --top-k 2 --submodels 6 --thresholds 0"}  # sd2_tree's shape and exits
                                                         # ("--total-token auto": sized by timed passes, the draft's exits)
SD2_EXITS=${SD2_EXITS:-}                                 # SD2 exits for both methods, e.g. 6 or 6,9,12 (empty: the
                                                         # draft's own for sd2_chain, SD2_TREE's for sd2_tree)
SD2_THRESHOLDS=${SD2_THRESHOLDS:-}                       # one per exit, the last 0 (empty: the draft's, or defaults)
DEVICE=${DEVICE:-auto}                                   # auto | cpu | cuda
CUDA_GRAPHS=${CUDA_GRAPHS:-0}                            # 1: the shared engine's methods with --cuda-graphs (CUDA)
BENCH=${BENCH:-spec_bench}                               # questions: data/$BENCH/question.jsonl
TEMP=${TEMP:-0.0}                                        # 0 = greedy (then outputs must all be equal)
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-1024}
QUESTION_BEGIN=${QUESTION_BEGIN:-}                       # question range [begin, end), empty = all
QUESTION_END=${QUESTION_END:-}
PER_TASK=${PER_TASK:-}                                   # N questions per task (8 -> 48 questions), empty = all
WARMUP=${WARMUP:-3}
NUM_WORKERS=${NUM_WORKERS:-}                             # N > 1: the questions split across N CPU workers on Ray
NUM_GPUS_TOTAL=${NUM_GPUS_TOTAL:-}                       # or across GPU workers on Ray: GPUs in all (Spec-Bench's name)
NUM_GPUS_PER_MODEL=${NUM_GPUS_PER_MODEL:-}               # GPUs per worker (1, the default: the engine uses one)
                                                         # (Ray: pip install ray; RAY_ADDRESS for a cluster)
METHODS=${METHODS:-"ar ar_hf sd2_chain sd2_tree sps sps_hf pld pld_hf lookahead rest eagle eagle2 medusa hydra"}
ANSWERS=${ANSWERS:-$ROOT/data/$BENCH/model_answer}       # where answer files go
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
# ----------------------------------------------------------------------------------------------

[ -x "$PYTHON" ] || PYTHON=python
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }   # paths given relative to the caller
TARGET=$(absolute "$TARGET"); DRAFT=$(absolute "$DRAFT"); DATASTORE=$(absolute "$DATASTORE")
EAGLE_HEAD=$(absolute "$EAGLE_HEAD"); MEDUSA_HEADS=$(absolute "$MEDUSA_HEADS"); HYDRA_HEADS=$(absolute "$HYDRA_HEADS")
ANSWERS=$(absolute "$ANSWERS")

# ---- every setting checked before the first method runs (a bad one would otherwise surface hours in)
KNOWN_METHODS="ar ar_hf sd2_chain sd2_tree sps sps_hf pld pld_hf lookahead rest eagle eagle2 medusa hydra"
fail() { echo "error: $*" >&2; exit 2; }
selected() { [[ " $METHODS " == *" $1 "* ]]; }
one_of() { local value=$1; shift; [[ " $* " == *" $value "* ]]; }
[ -n "${METHODS// /}" ] || fail "METHODS is empty (known: $KNOWN_METHODS)"
for method in $METHODS; do
    one_of "$method" $KNOWN_METHODS && continue
    hint=""; one_of "${method//-/_}" $KNOWN_METHODS && hint=" (did you mean ${method//-/_}?)"
    fail "unknown method '$method' in METHODS$hint; known: $KNOWN_METHODS"
done
[ -f "$TARGET/config.json" ] || fail "TARGET $TARGET: not a model folder (no config.json)"
if selected sd2_chain || selected sd2_tree || selected sps || selected sps_hf; then
    [ -f "$DRAFT/config.json" ] || fail "DRAFT $DRAFT: not a model folder (no config.json)"
fi
if selected rest; then [ -f "$DATASTORE" ] || fail "DATASTORE $DATASTORE: not found (scripts/build_rest_datastore.py builds it)"; fi
if selected eagle || selected eagle2; then
    [ -f "$EAGLE_HEAD/config.json" ] || fail "EAGLE_HEAD $EAGLE_HEAD: not an EAGLE head (train/scripts/train_eagle.sh trains one)"
fi
if selected medusa; then [ -f "$MEDUSA_HEADS/config.json" ] || fail "MEDUSA_HEADS $MEDUSA_HEADS: no heads there (train/scripts/train_medusa.sh)"; fi
if selected hydra; then [ -f "$HYDRA_HEADS/config.json" ] || fail "HYDRA_HEADS $HYDRA_HEADS: no heads there (train/scripts/train_hydra.sh)"; fi
[ -f "$ROOT/data/$BENCH/question.jsonl" ] || fail "BENCH $BENCH: no data/$BENCH/question.jsonl"
one_of "$DTYPE" float32 bfloat16 float16 || fail "DTYPE '$DTYPE': use float32, bfloat16 or float16"
[ -z "$DRAFT_DTYPE" ] || one_of "$DRAFT_DTYPE" float32 bfloat16 float16 \
    || fail "DRAFT_DTYPE '$DRAFT_DTYPE': use float32, bfloat16, float16 or '' (the target's)"
[ -z "$SD2_DRAFT_DTYPE" ] || one_of "$SD2_DRAFT_DTYPE" int8 float32 bfloat16 float16 \
    || fail "SD2_DRAFT_DTYPE '$SD2_DRAFT_DTYPE': use int8, float32, bfloat16, float16 or '' (int8 on a CPU, bfloat16 on CUDA)"
one_of "$DEVICE" auto cpu cuda || fail "DEVICE '$DEVICE': use auto, cpu or cuda"
one_of "$LOOKUP_FIRST" 0 1 || fail "LOOKUP_FIRST '$LOOKUP_FIRST': use 0 or 1"
one_of "$CUDA_GRAPHS" 0 1 || fail "CUDA_GRAPHS '$CUDA_GRAPHS': use 0 or 1"
if [ "$CUDA_GRAPHS" = 1 ] && [ "$DEVICE" = cpu ]; then fail "CUDA_GRAPHS=1 needs a CUDA device, not DEVICE=cpu"; fi
if [ "$LOOKUP_FIRST" = 1 ] && [ "$LOOKUP_TOKENS" = 0 ]; then fail "LOOKUP_FIRST=1 needs LOOKUP_TOKENS > 0"; fi
for name in MAX_NEW_TOKENS WARMUP LOOKUP_TOKENS QUESTION_BEGIN QUESTION_END PER_TASK NUM_WORKERS NUM_GPUS_TOTAL \
            NUM_GPUS_PER_MODEL; do
    value=${!name}
    [ -z "$value" ] || [[ "$value" =~ ^[0-9]+$ ]] || fail "$name '$value': not a whole number"
done
[[ "$TEMP" =~ ^[0-9]*\.?[0-9]+$ ]] || fail "TEMP '$TEMP': not a number >= 0"
[[ -z "$SD2_EXITS" || "$SD2_EXITS" =~ ^[0-9]+(,[0-9]+)*$ ]] || fail "SD2_EXITS '$SD2_EXITS': use comma-separated layer counts, e.g. 6,9,12"
[[ -z "$SD2_THRESHOLDS" || "$SD2_THRESHOLDS" =~ ^[0-9.]+(,[0-9.]+)*$ ]] \
    || fail "SD2_THRESHOLDS '$SD2_THRESHOLDS': use comma-separated numbers, e.g. 0.5,0.5,0"
cd "$ROOT/inference"
SUFFIX="$DTYPE-temp-$TEMP"
ENGINE=()   # flags for the methods on the shared engine (not the *_hf references)
if [ "$CUDA_GRAPHS" = 1 ]; then SUFFIX="$DTYPE-graphs-temp-$TEMP"; ENGINE=(--cuda-graphs); fi
COMMON=(--model-path "$TARGET" --bench-name "$BENCH" --dtype "$DTYPE" --device "$DEVICE" --temperature "$TEMP"
        --max-new-tokens "$MAX_NEW_TOKENS" --num-warmup "$WARMUP")
[ -n "$QUESTION_BEGIN" ] && COMMON+=(--question-begin "$QUESTION_BEGIN")
[ -n "$QUESTION_END" ] && COMMON+=(--question-end "$QUESTION_END")
[ -n "$PER_TASK" ] && COMMON+=(--questions-per-task "$PER_TASK")
[ -n "$NUM_WORKERS" ] && COMMON+=(--num-workers "$NUM_WORKERS")
[ -n "$NUM_GPUS_TOTAL" ] && COMMON+=(--num-gpus-total "$NUM_GPUS_TOTAL")
[ -n "$NUM_GPUS_PER_MODEL" ] && COMMON+=(--num-gpus-per-model "$NUM_GPUS_PER_MODEL")

declare -a DONE=()
# run METHOD MODULE ARGS...: answer with evaluation/MODULE.py as model-id $MODEL_NAME-METHOD-$SUFFIX,
# when METHOD is selected and the script exists.
run() {
    local method=$1 module=$2; shift 2
    selected "$method" || return 0
    echo "== $method"
    "$PYTHON" -m "evaluation.$module" "${COMMON[@]}" --model-id "$MODEL_NAME-$method-$SUFFIX" \
        --answer-file "$ANSWERS/$MODEL_NAME-$method-$SUFFIX.jsonl" "$@"
    DONE+=("$method")
}

run ar        inference_baseline  "${ENGINE[@]}"
run ar_hf     inference_baseline  --engine hf                      # Hugging Face generate
DRAFT_ARGS=(--drafter-path "$DRAFT" ${DRAFT_DTYPE:+--draft-dtype "$DRAFT_DTYPE"})
if [ -z "$SD2_DRAFT_DTYPE" ]; then
    SD2_DRAFT_DTYPE=$("$PYTHON" -c "import torch; print('bfloat16' if torch.cuda.is_available() and '$DEVICE' != 'cpu' else 'int8')")
fi
SD2_ARGS=(--drafter-path "$DRAFT" --draft-dtype "$SD2_DRAFT_DTYPE" --lookup-tokens "$LOOKUP_TOKENS")
[ "$LOOKUP_FIRST" = 1 ] && SD2_ARGS+=(--lookup-first)
SD2_OVERRIDES=(${SD2_EXITS:+--submodels "$SD2_EXITS"} ${SD2_THRESHOLDS:+--thresholds "$SD2_THRESHOLDS"})  # last flag wins
run sd2_chain inference_sd2       "${ENGINE[@]}" "${SD2_ARGS[@]}" "${SD2_OVERRIDES[@]}"   # adaptive: the draft's exits
# shellcheck disable=SC2086  # SD2_TREE splits into flags
run sd2_tree  inference_sd2       "${ENGINE[@]}" "${SD2_ARGS[@]}" --tree $SD2_TREE "${SD2_OVERRIDES[@]}"
run sps       inference_sps       "${ENGINE[@]}" "${DRAFT_ARGS[@]}"               # the draft at its deepest exit
run sps_hf    inference_sps       --drafter-path "$DRAFT" --engine hf   # HF assisted generation
run pld       inference_pld       "${ENGINE[@]}"
run pld_hf    inference_pld       --engine hf                      # HF prompt lookup
run lookahead inference_lookahead "${ENGINE[@]}" --level 5 --window 7 --guess 7
run rest      inference_rest      "${ENGINE[@]}" --datastore-path "$DATASTORE" --num-draft 64 --max-token-span 16
run eagle     inference_eagle     "${ENGINE[@]}" --ea-model-path "$EAGLE_HEAD"             # static tree
run eagle2    inference_eagle2    "${ENGINE[@]}" --ea-model-path "$EAGLE_HEAD" --total-token 60 --depth 5 --top-k 10
run medusa    inference_medusa    "${ENGINE[@]}" --medusa-model-path "$MEDUSA_HEADS"       # static sparse tree
run hydra     inference_hydra     "${ENGINE[@]}" --hydra-model-path "$HYDRA_HEADS"

# ---- reports against AR on the same engine ------------------------------------------------------
BASE="$ANSWERS/$MODEL_NAME-ar-$SUFFIX.jsonl"
if [ ! -f "$BASE" ]; then echo "no AR answers ($BASE): no reports"; exit 0; fi
for method in "${DONE[@]}"; do
    [ "$method" = ar ] && continue
    FILE="$ANSWERS/$MODEL_NAME-$method-$SUFFIX.jsonl"
    echo; echo "==== $method vs ar: speed"
    "$PYTHON" evaluation/speed.py --file-path "$FILE" --base-path "$BASE" || echo "(no speed report for $method)"
    if [ "$TEMP" = 0 ] || [ "$TEMP" = 0.0 ]; then   # greedy: outputs must equal AR's (float32: exactly)
        echo; echo "==== $method vs ar: equality"
        "$PYTHON" evaluation/equal.py --jsonfile1 "$BASE" --jsonfile2 "$FILE" --tokenizer-path "$TARGET" \
            || echo "(no equality report for $method)"
    fi
done
