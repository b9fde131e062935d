"""A stand-in for birdc, for the unit tests of lvs-announce's gate (tests/unit/test_gate.py).

It answers the three commands the gate runs, as BIRD 2.0.12's birdc does
(its greeting, `show protocols`' table, "NAME: enabled" / "already enabled",
a syntax error and exit 1 for a name it does not know), from a JSON file of
protocol states beside it.  Every call is appended to calls.log; a file
named `hang` makes it sleep (a hung BIRD), one named `refuse` makes it fail
as a birdc without a BIRD behind its socket does.  The real BIRD is
tests/netns/test_announce_gate.py's.

    fakebirdc.py DIR show protocols | enable NAME | disable NAME
"""
import json
import os
import sys
import time

GREETING = "BIRD 2.0.12 ready."


def main(argv):
    where, words = argv[1], argv[2:]
    path = os.path.join(where, "protocols.json")
    with open(os.path.join(where, "calls.log"), "a") as f:
        f.write(" ".join(words) + "\n")
    if os.path.exists(os.path.join(where, "hang")):
        time.sleep(60)
    if os.path.exists(os.path.join(where, "refuse")):
        print("Unable to connect to server control socket (/run/bird/bird.ctl): "
              "No such file or directory")
        return 1
    with open(path) as f:
        states = json.load(f)
    captured = os.path.join(where, "_".join(words))
    if os.path.exists(captured + ".out"):
        with open(captured + ".out") as f:
            sys.stdout.write(f.read())
        try:
            with open(captured + ".rc") as f:
                return int(f.read())
        except FileNotFoundError:
            return 0
    print(GREETING)
    if words in (["show", "protocols"], ["show", "protocols", "all"]):
        print("Name       Proto      Table      State  Since         Info")
        for name, st in states.items():
            print(f"{name:<10} Static     master4    {st:<6} 03:19:27.191  ")
        return 0
    if len(words) == 2 and words[0] in ("enable", "disable"):
        verb, name = words
        if name not in states or os.path.exists(os.path.join(where, f"refuse-{name}")):
            print("syntax error, unexpected CF_SYM_UNDEFINED, expecting CF_SYM_KNOWN or TEXT or ALL")
            return 1
        new = "up" if verb == "enable" else "down"
        print(f"{name}: {'already ' if states[name] == new else ''}{verb}d")
        states[name] = new
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(states, f)
        os.replace(tmp, path)
        return 0
    print("syntax error")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
