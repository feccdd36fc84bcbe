# bench/interleave.sh: sourced by the bench scripts that compare two settings of one config key
# with `lockstep bench --set KEY=A --against KEY=B` (bench/exact-vs-fast, bench/checkpoint-cost,
# bench/shared-memory).
#
#   swapped_pairs NAME KEY A B COMMAND...   -> "A/B A/B ...|median ratio"
#
# Runs COMMAND --set KEY=A --against KEY=B, then again with the roles swapped (the trainer built
# first measured 1-3% faster with identical configs; swapping cancels that), reads each pair's
# samples/s from `lockstep bench`'s table and prints every pair as A/B samples/s, then the median
# of all pair ratios A / B. NAME prefixes the error when a run fails.
swapped_pairs() {
  local name="$1" key="$2" a="$3" b="$4"; shift 4
  local out pairsOut ratios="" cells="" first second aIsFirst
  for aIsFirst in 1 0; do
    if [ "$aIsFirst" = 1 ]; then first="$a"; second="$b"; else first="$b"; second="$a"; fi
    out=$("$@" --set "$key=$first" --against "$key=$second" 2>&1)
    echo "$out" | grep -q '^samples/s: A median' || { echo "$name: lockstep bench failed:" >&2; echo "$out" >&2; return 1; }
    pairsOut=$(echo "$out" | awk -v aIsFirst="$aIsFirst" \
      '/^ *[0-9]+  /{ x = aIsFirst ? $2 : $3; y = aIsFirst ? $3 : $2; printf "%.0f/%.0f %.6f\n", x, y, x / y }')
    cells+="$(echo "$pairsOut" | awk '{ printf "%s ", $1 }')"
    ratios+="$(echo "$pairsOut" | awk '{ print $2 }')"$'\n'
  done
  echo "$cells|$(printf '%s' "$ratios" | grep . | sort -g | awk '{a[NR]=$1} END { print NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2 }')"
}
