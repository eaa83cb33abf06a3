#!/usr/bin/env bash
# One prepared run for a lent accelerator: the studies' paper configs, then the training
# throughput benchmark, in a wall-clock budget.
#
#   OUT=dir BUDGET=seconds STUDIES="multi_layer_gdpp ..." bash benchmarks/on_accelerator.sh
#
# (ARGS="--set key=value ..." is added to every paper run: a dry run on a CPU, say.)
# It runs the image's own python3 and packages on this checkout without installing it
# (icl_toy.experiments is linked to experiments/). Each paper run writes figures/paper/ and
# gets what is left of the budget less a reserve for the benchmark; what finished, the
# checkpoints of what did not, and every log are packed into $OUT.
set -u
OUT=${OUT:-accelerator_out}
BUDGET=${BUDGET:-540}
STUDIES=${STUDIES:-multi_layer_gdpp}
RESERVE=${RESERVE:-100}  # seconds kept for the benchmark and the packing
mkdir -p "$OUT"
# float32 matrix products at full precision: the GPU default (TF32) rounds them to ~1e-3,
# coarser than the gaps to GD++ that the studies read.
export JAX_DEFAULT_MATMUL_PRECISION=highest
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[ -e icl_toy/experiments ] || ln -s ../experiments icl_toy/experiments
start=$SECONDS
left() { echo $((BUDGET - (SECONDS - start))); }
{
    nvidia-smi -L
    python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
} >"$OUT/device.txt" 2>&1
for name in $STUDIES; do
    t0=$SECONDS
    timeout $(($(left) - RESERVE)) python3 -m icl_toy.runs.cli run "$name" --paper ${ARGS:-} 2>&1 |
        tee "$OUT/$name.paper.log"
    echo "$name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$OUT/device.txt"
done
timeout $(($(left) - 15)) python3 -m benchmarks.train_throughput --seeds 10 --steps 1000 --json \
    >"$OUT/train_throughput.txt" 2>&1
echo "train_throughput: exit $? ($(left) s of the budget left)" >>"$OUT/device.txt"
tar czf "$OUT/paper.tgz" figures/paper
