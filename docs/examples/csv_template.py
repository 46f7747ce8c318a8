"""Submit a CSV with a template and read the results table (the rows, answers beside them).

    python docs/examples/csv_template.py [tickets.csv]

Without an argument it writes a small tickets.csv in a temporary directory first. The client
uploads the file's bytes; the workers read the rows and build each prompt from the template.
"""

import csv
import sys
import tempfile
from pathlib import Path

from batchline.client import Client

TICKETS = [
    {"id": "t-1", "text": "The app logs me out every five minutes."},
    {"id": "t-2", "text": "Please add a dark mode."},
    {"id": "t-3", "text": "I was charged twice this month."},
]


def sample_csv(folder: Path) -> Path:
    path = folder / "tickets.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(TICKETS)
    return path


def main(path: Path) -> None:
    client = Client()  # settings from BATCHLINE_* variables
    job = client.submit(
        path,
        template="Summarize this support ticket in five words: {text}",
        id_column="id",
        defaults={"model": "claude-haiku-4-5", "max_tokens": 100},
    )
    client.wait(job["job_id"])
    table = client.table(job["job_id"])
    print(", ".join(table.columns))
    for row in table:  # input order: id, text, state, answer, error_type, ..., cost_usd
        print(row["id"], row["state"], row["answer"])
    out = path.with_name("answers.csv")
    print("wrote", client.write_table(job["job_id"], out), "rows to", out)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(sample_csv(Path(tmp)))
