# Put the env's CUDA libraries on LD_LIBRARY_PATH whenever it is activated, as TensorFlow's install
# docs did for releases before 2.14 (pip.md for 2.13: $CUDNN_PATH/lib, then $CONDA_PREFIX/lib).
# Deactivating restores what was there. Parameters: ENV (the env's folder; a leading ~ is $HOME).
set -euo pipefail
ENV="${ENV/#\~/$HOME}"
mkdir -p "$ENV/etc/conda/activate.d" "$ENV/etc/conda/deactivate.d"
cat > "$ENV/etc/conda/activate.d/tfrig-cuda.sh" <<'SH'
# Written by tfrig (conda.cuda): TensorFlow < 2.14 loads CUDA and cuDNN from this env.
export TFRIG_SAVED_LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
LD_LIBRARY_PATH="$CONDA_PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for tfrig_cudnn in "$CONDA_PREFIX"/lib/python3*/site-packages/nvidia/cudnn/lib; do
  if [ -d "$tfrig_cudnn" ]; then LD_LIBRARY_PATH="$tfrig_cudnn:$LD_LIBRARY_PATH"; fi
done
unset tfrig_cudnn
export LD_LIBRARY_PATH
SH
cat > "$ENV/etc/conda/deactivate.d/tfrig-cuda.sh" <<'SH'
# Written by tfrig (conda.cuda): what LD_LIBRARY_PATH was before the env was activated.
if [ -n "${TFRIG_SAVED_LD_LIBRARY_PATH:-}" ]; then export LD_LIBRARY_PATH="$TFRIG_SAVED_LD_LIBRARY_PATH"; else unset LD_LIBRARY_PATH; fi
unset TFRIG_SAVED_LD_LIBRARY_PATH
SH
