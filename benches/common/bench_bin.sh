# Sourced by the load scripts (from the repository root): bench_bin NAME
# builds the bench target NAME (release, `cargo bench --no-run`) and prints
# the path of its executable.
bench_bin() {
  cargo bench --bench "$1" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
