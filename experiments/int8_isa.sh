# Sourced by the INT8 speed scripts: sets `isa` to this CPU's best int8 instructions (amx, vnni or avx2), the name of
# the folder their results go to, so that runs on different CPUs sit side by side.
flags=$(grep -m1 '^flags' /proc/cpuinfo)
case "$flags" in
  *amx_int8*) isa=amx ;;
  *avx512_vnni*|*avx_vnni*) isa=vnni ;;
  *) isa=avx2 ;;
esac
