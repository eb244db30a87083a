"""Print every config key with its default and meaning as a Markdown table (the README's key table).

python scripts/config_keys.py            # print the table
python scripts/config_keys.py --readme   # replace the table in README.md
"""

import sys
from pathlib import Path

from minitx.config import describe_keys

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| key | default | meaning |"


def markdown_table() -> str:
    rows = [HEADER, "|---|---|---|"]
    for key, default, meaning in describe_keys():
        rows.append(f"| `{key}` | `{default}` | {meaning} |")
    return "\n".join(rows)


def update_readme() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index(HEADER)
    end = text.index("\n\n", start)
    README.write_text(text[:start] + markdown_table() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    if "--readme" in sys.argv[1:]:
        update_readme()
    else:
        print(markdown_table())
