"""The docs cannot rot silently: in README.md, docs/ and tests/README.md every relative link names
a file that exists (and, for a Markdown file, a heading that exists), every `make TARGET` names a
target of the Makefile, and every `kd ...` command in a fenced sh block of README.md and
docs/guide/ parses (KD_PARSE_ONLY=1: kd checks the command line and runs nothing).
Usage: docs_test.py KD_BINARY REPO_ROOT"""
import glob
import os
import re
import shlex
import subprocess
import sys

KD, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
os.chdir(ROOT)
fails = []

pages = ["README.md", "tests/README.md", "bench/README.md", *sorted(glob.glob("docs/**/*.md", recursive=True))]


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(path):
    out, fence = set(), False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"^#{1,6} ", line):
            out.add(slug(line.lstrip("#")))
    return out


def prose(text):
    """The text outside fenced blocks and inline code."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


makefile = open("Makefile").read()
targets = set(re.findall(r"^([\w.-]+):", makefile, re.M))
links = commands = 0
for page in pages:
    text = open(page, encoding="utf-8").read()
    here = os.path.dirname(page)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(text)):
        if re.match(r"^(https?:|mailto:)", target):
            continue
        links += 1
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(here, path)) if path else page
        if not os.path.exists(full):
            fails.append(f"{page}: link to {target}: {full} does not exist")
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            fails.append(f"{page}: link to {target}: no heading '#{anchor}' in {full}")
    for target in re.findall(r"`make ([\w.-]+)", text):
        if target not in targets:
            fails.append(f"{page}: `make {target}`: no such target in the Makefile")


def kd_lines(text):
    """`kd ...` command lines of the fenced sh blocks, continuation lines joined, comments cut."""
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            for part in re.split(r";|&&", line):
                part = part.strip()
                # Variables set for one command (RANK=0 ... kd train ...).
                part = re.sub(r"^(\w+=\S+\s+)+", "", part)
                if part.startswith("kd "):
                    yield part


for page in ["README.md", *sorted(glob.glob("docs/guide/*.md"))]:
    for line in kd_lines(open(page, encoding="utf-8").read()):
        # kd launch ... -- kd CMD: the whole line, and the command it launches.
        cmds = [line] + [line.split(" -- ", 1)[1].strip()] if " -- kd " in line else [line]
        for cmd in cmds:
            commands += 1
            argv = shlex.split(cmd)[1:]
            r = subprocess.run([KD, *argv], capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, KD_PARSE_ONLY="1"))
            # The runs and folders a command names are the reader's own.
            if r.returncode != 0 and "does not exist" not in r.stderr:
                fails.append(f"{page}: `{cmd}` does not parse: {r.stderr.strip()}")

print(f"{len(pages)} pages: {links} relative links, {commands} kd command lines checked")
for f in fails:
    print("FAIL", f)
print(f"{len(fails)} failed")
sys.exit(1 if fails else 0)
