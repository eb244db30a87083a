"""Print every config key with its default and meaning as a Markdown table (the README's key table).

python scripts/config_keys.py
"""

from minitx.config import describe_keys


def markdown_table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in describe_keys():
        rows.append(f"| `{key}` | `{default}` | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
