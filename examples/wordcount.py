"""Count words in a text file and write the counts to counts.csv.

    python examples/wordcount.py examples/data/book.txt --top 5
    rgrid run examples/wordcount.py examples/data/book.txt --top 5
"""
import argparse
import collections
import csv
import re

parser = argparse.ArgumentParser()
parser.add_argument("path")
parser.add_argument("--top", type=int, default=10)
args = parser.parse_args()

with open(args.path, encoding="utf-8") as f:
    words = re.findall(r"[a-z']+", f.read().lower())
counts = collections.Counter(words)
print(f"{len(words)} words, {len(counts)} distinct")
for word, n in counts.most_common(args.top):
    print(f"{n:6d}  {word}")
with open("counts.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["word", "count"])
    writer.writerows(counts.most_common())
