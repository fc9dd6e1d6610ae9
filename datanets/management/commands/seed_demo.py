"""Seed the demo: users, a Finance Datanet from the PhraseBank, a Literature Datanet from Tiny Shakespeare,
and an Instructions Datanet (chat) built from both: finance questions whose answers are the PhraseBank
labels, and Shakespeare "continue this passage" pairs.

The Finance Datanet also gets a curator-held evaluation set (EVALUATION_SIZE PhraseBank sentences uploaded
by the curator, taken out of the contributors' shares): the attribution build's validation queries.

Everything goes through the same services as a real upload (encoding detection, validation, dedup,
conflicts, stakes in the outbox, curation, versions), ingesting in this process rather than on a worker.
Idempotent: users, Datanets, contributions (by file hash) and versions are reused when present.
"""
from __future__ import annotations

import csv
import io
import random
import secrets
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError

from accounts.services import user_create
from core.roles import CONTRIBUTOR, CURATOR, MODEL_DEVELOPER
from datanets import chat, services
from datanets.models import Contribution, Datanet
from ledger.governance import DEMO_GRANT_WHOLE_OPEN, governance_tokens_grant

# With DEBUG on every demo user gets this documented password (docs/datanets.md); otherwise each gets a
# random one, printed once when the user is created.
DEMO_PASSWORD = "open-factory-demo"  # noqa: S105 - documented demo password, DEBUG only
CONTRIBUTORS = ("alice", "bob", "carol", "dave", "erin")
NOISY = "erin"  # uploads a share whose labels are 30% relabelled: curation and attribution have something to find
NOISY_FRACTION = 0.3
SEED = 0
CURATOR_USER = "cora"
DEVELOPER_USER = "devon"
FINANCE, LITERATURE = "finance", "literature"
LABELS = ["positive", "negative", "neutral"]
LITERATURE_CONTRIBUTORS = ("alice", "bob", "carol")
EVALUATION_SIZE = 300
EVALUATION_FILE = "phrasebank-evaluation.csv"
INSTRUCTIONS = "instructions"
# How many conversations each instruction upload holds: 220 in all, few enough that the verbatim preset's 40
# passes take about 9 CPU minutes and teach the passages well enough to recite (9 of 12 prompts reuse >= 8
# tokens: benchmarks/results/generation_spans_verbatim.md). At 1,500 no preset made the demo recite.
INSTRUCTION_FINANCE_ROWS = 100
INSTRUCTION_PASSAGES = 60


def instruction_uploads(phrasebank: Path, shakespeare: Path, *, finance_rows: int = INSTRUCTION_FINANCE_ROWS,
                        passages: int = INSTRUCTION_PASSAGES,
                        passage_lines: tuple[int, int] | None = None) -> list[tuple[str, str, bytes]]:
    """(contributor, file name, bytes) of the Instructions Datanet's uploads, one of each accepted shape:
    alice's finance questions as prompt/response CSV (from her PhraseBank share, the label as the answer),
    bob's and carol's continuation pairs as chat JSONL (`messages`), from their parts of Tiny Shakespeare.
    Deterministic. The keywords give other shapes of the same data (benchmarks/generation_spans.py measures
    them): `passage_lines` (low, high) keeps the paragraphs of that many non-empty lines only."""
    import json

    shares, _ = phrasebank_split(phrasebank)
    finance = chat.sentiment_pairs(shares["alice"][:finance_rows])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["prompt", "response"])
    writer.writerows(finance)
    uploads = [("alice", "finance-questions.csv", buf.getvalue().encode("utf-8"))]
    parts = shakespeare_parts(shakespeare)
    for name, part in zip(("bob", "carol"), parts[1:], strict=True):
        paragraphs = part.split("\n\n")
        if passage_lines:
            low, high = passage_lines
            paragraphs = [p for p in paragraphs if low <= sum(1 for line in p.split("\n") if line.strip()) <= high]
        pairs = chat.continuation_pairs(paragraphs)[:passages]
        lines = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
                            ensure_ascii=False) for q, a in pairs]
        uploads.append((name, f"continue-passages-{name}.jsonl", ("\n".join(lines) + "\n").encode("utf-8")))
    return uploads


def phrasebank_split(path: Path) -> tuple[dict[str, list[tuple[str, str]]], list[tuple[str, str]]]:
    """(one share per contributor, the curator's evaluation set) of the PhraseBank's (label, text) rows,
    shuffled (seed 0). The evaluation set is the first EVALUATION_SIZE rows whose text occurs once in the
    file, so no contributor supplies that text; the rest are dealt into the shares. The noisy contributor's
    share has 30% of its rows given another label (seeded). Deterministic."""
    with open(path, encoding="iso-8859-1", newline="") as fh:
        rows = [(r["result"], r["content"]) for r in csv.DictReader(fh)]
    rng = random.Random(SEED)
    rng.shuffle(rows)
    seen: dict[str, int] = {}
    for _, text in rows:
        seen[text] = seen.get(text, 0) + 1
    picked = [i for i, (_, text) in enumerate(rows) if seen[text] == 1][:EVALUATION_SIZE]
    evaluation = [rows[i] for i in picked]
    taken = set(picked)
    rows = [row for i, row in enumerate(rows) if i not in taken]
    n = len(CONTRIBUTORS)
    shares = {name: rows[i::n] for i, name in enumerate(CONTRIBUTORS)}
    noisy = shares[NOISY]
    for i in sorted(rng.sample(range(len(noisy)), round(NOISY_FRACTION * len(noisy)))):
        label, text = noisy[i]
        noisy[i] = (rng.choice([lab for lab in LABELS if lab != label]), text)
    return shares, evaluation


def phrasebank_shares(path: Path) -> dict[str, list[tuple[str, str]]]:
    """The contributors' shares of `phrasebank_split`."""
    return phrasebank_split(path)[0]


def _csv_bytes(rows: list[tuple[str, str]]) -> bytes:
    # Written as the original file is (ISO-8859-1, columns result/content): the ingest must detect it.
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["result", "content"])
    writer.writerows(rows)
    return buf.getvalue().encode("iso-8859-1")


def shakespeare_parts(path: Path) -> list[str]:
    """Tiny Shakespeare cut at blank lines into len(LITERATURE_CONTRIBUTORS) consecutive parts."""
    paragraphs = [p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    n = len(LITERATURE_CONTRIBUTORS)
    size = -(-len(paragraphs) // n)
    return ["\n\n".join(paragraphs[i * size:(i + 1) * size]) + "\n" for i in range(n)]


class Command(BaseCommand):
    help = ("Create demo users, a Finance, a Literature and an Instructions (chat) Datanet with accepted "
            "contributions and a version each.")

    def add_arguments(self, parser):
        parser.add_argument("--if-needed", action="store_true", help="Do nothing when the demo is already seeded.")
        parser.add_argument("--data-dir", default="", help="Folder with financial_phrasebank.csv and tinyshakespeare.txt "
                                                            "(default: the SHARED_DATA_DIR setting).")

    def handle(self, *args, if_needed=False, data_dir="", **options):
        started = time.monotonic()
        if if_needed and self._seeded():
            self.stdout.write("seed_demo: already seeded")
            return
        data = Path(data_dir or settings.SHARED_DATA_DIR)
        phrasebank, shakespeare = data / "financial_phrasebank.csv", data / "tinyshakespeare.txt"
        for path in (phrasebank, shakespeare):
            if not path.is_file():
                message = f"{path} not found: set SHARED_DATA_DIR or pass --data-dir"
                if if_needed:  # from `bootstrap`: the app runs without the demo, so say it and go on
                    self.stderr.write(f"seed_demo: skipped, {message}")
                    return
                raise CommandError(message)
        users = self._users()
        cora = users[CURATOR_USER]

        finance = self._datanet(FINANCE, owner=cora, name="Finance sentiment", domain=Datanet.Domain.FINANCE,
                                task=Datanet.Task.CLASSIFICATION, labels=LABELS, license="CC BY-NC-SA 3.0",
                                description="Sentences from financial news labelled positive, negative or neutral "
                                            "(Financial PhraseBank, Malo et al. 2014).")
        shares, evaluation = phrasebank_split(phrasebank)
        for name, rows in shares.items():
            self._contribute(finance, users[name], f"phrasebank-{name}.csv", _csv_bytes(rows), curator=cora)
        # The curator's held-out sentences: in version 1, never trained on or paid (docs/datanets.md).
        self._contribute(finance, cora, EVALUATION_FILE, _csv_bytes(evaluation), curator=cora, is_evaluation=True)
        self._version(finance, cora)

        literature = self._datanet(LITERATURE, owner=cora, name="Literature: Tiny Shakespeare", domain=Datanet.Domain.OTHER,
                                   task=Datanet.Task.GENERATION, license="Public domain",
                                   description="Speeches from Shakespeare's plays, one record per paragraph, "
                                               "for generative fine-tunes and span attribution.")
        for name, part in zip(LITERATURE_CONTRIBUTORS, shakespeare_parts(shakespeare), strict=True):
            self._contribute(literature, users[name], f"shakespeare-{name}.txt", part.encode("utf-8"), curator=cora,
                             text_mode="paragraph")
        self._version(literature, cora)

        instructions = self._datanet(INSTRUCTIONS, owner=cora, name="Instructions: finance Q&A and Shakespeare",
                                     domain=Datanet.Domain.OTHER, task=Datanet.Task.CHAT, license="CC BY-NC-SA 3.0",
                                     description="Conversations for chat fine-tunes: questions on the sentiment of "
                                                 "financial news (answered with the PhraseBank label) and requests to "
                                                 "continue a passage of Shakespeare.")
        for name, file_name, content in instruction_uploads(phrasebank, shakespeare):
            self._contribute(instructions, users[name], file_name, content, curator=cora)
        self._version(instructions, cora)
        if settings.DEBUG:  # voting power for the governance demo (development chains only)
            for user in users.values():
                governance_tokens_grant(user=user)
            self.stdout.write(f"seed_demo: {DEMO_GRANT_WHOLE_OPEN:,} OPEN and its votes queued for each demo user")
        self.stdout.write(self.style.SUCCESS(f"seed_demo: done in {time.monotonic() - started:.1f}s"))

    @staticmethod
    def _seeded() -> bool:
        return all(Datanet.objects.filter(slug=slug, versions__isnull=False).exists() for slug in (FINANCE, LITERATURE, INSTRUCTIONS))

    def _users(self) -> dict:
        User = get_user_model()  # noqa: N806 - Django's idiom
        wanted = {**{n: [CONTRIBUTOR] for n in CONTRIBUTORS}, CURATOR_USER: [CURATOR],
                  DEVELOPER_USER: [MODEL_DEVELOPER]}
        users, created = {}, []
        for name, roles in wanted.items():
            user = User.objects.filter(username=name).first()
            if user is None:
                password = DEMO_PASSWORD if settings.DEBUG else secrets.token_urlsafe(12)
                user = user_create(username=name, password=password, email=f"{name}@demo.invalid", roles=roles)
                created.append((name, ", ".join(roles), password))
            users[name] = user
        if created:
            self.stdout.write("Demo users (passwords are shown this once):")
            for name, roles, password in created:
                self.stdout.write(f"  {name:<8} {roles:<30} {password}")
        return users

    def _datanet(self, slug: str, *, owner, **fields) -> Datanet:
        datanet = Datanet.objects.filter(slug=slug).first()
        if datanet is None:
            datanet = services.datanet_create(owner=owner, slug=slug, curators=[owner], **fields)
            self.stdout.write(f"Datanet {datanet.name} ({slug}) created")
        return datanet

    def _contribute(self, datanet: Datanet, user, file_name: str, content: bytes, *, curator, **options) -> None:
        result = services.contribution_upload(datanet=datanet, contributor=user, file=SimpleUploadedFile(file_name, content),
                                              file_name=file_name, inline=True, **options)
        c = result.contribution
        if c.ingest_state != Contribution.IngestState.DONE:
            raise CommandError(f"{file_name}: ingest {c.ingest_state}: {c.ingest_errors[:3]}")
        if c.status == Contribution.Status.PENDING:
            services.contribution_accept(contribution=c, curator=curator, reason="Demo seed")
        if result.created:
            self.stdout.write(f"  {datanet.slug}: {user.username} {file_name}: {c.record_count} records, "
                              f"{c.duplicates_dropped} duplicates, {c.conflicts} conflicts")

    def _version(self, datanet: Datanet, curator) -> None:
        if datanet.versions.exists():
            return
        version = services.datanet_version_create(datanet=datanet, user=curator)
        held = f" ({version.evaluation_count} curator-held evaluation)" if version.evaluation_count else ""
        self.stdout.write(f"  {datanet.slug} v{version.number}: {version.record_count} records{held}, "
                          f"root {version.merkle_root}")
