"""Submit a list of requests with the Python client, wait for the job, print each result.

Run it where a Batchline runs (`make demo`'s stack or `docker compose up`): the client reads
its settings (BATCHLINE_REDIS_URL, ...) from the environment, like the workers.

    python docs/examples/submit_requests.py
"""

from batchline.client import Client

QUESTIONS = ["What is a haiku?", "Name three primary colours.", "What is 17 times 3?"]


def main() -> None:
    client = Client()  # settings from BATCHLINE_* variables
    requests = [{"custom_id": f"q{i}", "prompt": text} for i, text in enumerate(QUESTIONS)]
    job = client.submit(requests, defaults={"model": "claude-haiku-4-5", "max_tokens": 200})
    print("job", job["job_id"], "accepted", job["accepted"])

    status = client.wait(job["job_id"])  # blocks until completed (or canceled)
    print("state", status["state"], "counts", status["counts"])
    for record in client.results(job["job_id"], ordered=True):
        if record["state"] == "succeeded":
            text = record["message"]["content"][0]["text"]
            print(record["custom_id"], "->", text)
        else:
            print(record["custom_id"], record["state"], record.get("error"))


if __name__ == "__main__":
    main()
