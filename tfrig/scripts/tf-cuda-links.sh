#!/usr/bin/env bash
# TensorFlow's pip page, "[GPU only] Virtual environment configuration" (compat.yaml
# tensorflow_builds.package_history.docs_fix_if_gpu_not_found): in a venv, TensorFlow 2.16 finds
# the CUDA libraries pip installed (nvidia-*-cu12) only once they are linked into its own folder,
# and XLA finds ptxas only on the venv's PATH. Idempotent; usable alone.
#   VENV     the venv's folder (a leading ~ is this user's home)
set -euo pipefail
VENV=${VENV:?VENV is required}
case "${VENV}" in "~") VENV=${HOME} ;; "~/"*) VENV=${HOME}/${VENV#"~/"} ;; esac
PYTHON=${VENV}/bin/python
tf_dir=$(dirname "$("${PYTHON}" -c 'print(__import__("tensorflow").__file__)')")
(cd "${tf_dir}" && ln -sf ../nvidia/*/lib/*.so* .)
nvcc=$("${PYTHON}" -c 'import nvidia.cuda_nvcc, os; print(os.path.dirname(nvidia.cuda_nvcc.__file__))')
ptxas=$(find "$(dirname "${nvcc}")"/*/bin/ -name ptxas -print -quit)
if [ -n "${ptxas}" ]; then ln -sf "${ptxas}" "$(dirname "${PYTHON}")/ptxas"; fi
echo "linked the CUDA libraries into ${tf_dir}${ptxas:+ and ptxas into $(dirname "${PYTHON}")}"
