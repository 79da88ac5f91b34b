"""The pure knowledge: the catalog, the TensorFlow resolver, driver planning, nvidia-smi parsing and
image names. Plain functions over plain data; no SDK, Fabric, paramiko or docker (pyproject.toml's
import-linter contract keeps it so)."""
