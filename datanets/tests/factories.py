import csv
import io
from decimal import Decimal

from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.tests.factories import UserFactory
from core.factory_boy import factory_boy as factory
from core.roles import CONTRIBUTOR, CURATOR
from datanets.models import Contribution, Datanet, DatanetVersion


class DatanetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Datanet
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Datanet {n}")
    slug = factory.Sequence(lambda n: f"datanet-{n}")
    domain = Datanet.Domain.FINANCE
    task = Datanet.Task.CLASSIFICATION
    labels = factory.LazyFunction(lambda: ["positive", "negative", "neutral"])
    min_stake = Decimal("10")
    slash_fraction = Decimal("0.5")
    owner = factory.SubFactory(UserFactory)


def contributor(name: str = ""):
    return UserFactory(**({"username": name} if name else {}), roles=[CONTRIBUTOR])


def curator_of(datanet, name: str = ""):
    from datanets.services import curator_appoint

    user = UserFactory(**({"username": name} if name else {}), roles=[CURATOR])
    curator_appoint(datanet=datanet, user=user)
    return user


def rows_csv(rows: list[tuple[str, str]], *, labelled: bool = True) -> bytes:
    """`text,label` (or `text` alone) CSV of (text, label) rows, quoted where needed."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"] if labelled else ["text"])
    writer.writerows([(t, label) if labelled else (t,) for t, label in rows])
    return out.getvalue().encode()


def in_version_order(rows: list, contributors: int) -> list:
    """The order DatanetVersionFactory's records take by id (contributor c uploads rows[c::contributors], one
    file after another): what a trainer sees, since runs read a version's records ordered by id."""
    return [row for c in range(contributors) for row in rows[c::contributors]]


class DatanetVersionFactory(factory.django.DjangoModelFactory):
    """A version made the way people make one, through the services: a curator's `datanet_create`, each
    contributor's CSV through `contribution_upload` (ingested here: the records' real canonical hashes),
    `contribution_accept`, then `datanet_version_create` (the real Merkle root, its `version_register` outbox
    row, the export queued on commit). Row i goes to contributor i % contributors (`in_version_order`).

    `near_duplicate_threshold` 1.0: the toy rows differ by a word or two and would otherwise cluster, which
    moves attribution credit (datanets/neardup.py); tests of clustering pass a lower one.
    """

    class Meta:
        model = DatanetVersion

    rows = factory.LazyFunction(list)
    contributors = 2
    task = Datanet.Task.CLASSIFICATION
    labels = factory.LazyFunction(lambda: ["negative", "neutral", "positive"])
    slug = factory.Sequence(lambda n: f"versioned-{n}")
    near_duplicate_threshold = 1.0

    @classmethod
    def _create(cls, model_class, *, rows, contributors, task, labels, slug, near_duplicate_threshold):
        from datanets import services

        if not rows:
            raise ValueError("DatanetVersionFactory needs rows: [(text, label), ...]")
        curator = UserFactory(roles=[CURATOR])
        datanet = services.datanet_create(owner=curator, name=slug.replace("-", " ").title(), slug=slug, task=task,
                                          labels=labels, curators=[curator],
                                          near_duplicate_threshold=near_duplicate_threshold)
        labelled = task == Datanet.Task.CLASSIFICATION
        for c in range(contributors):
            part = rows[c::contributors]
            if not part:
                continue
            name = f"part{c}.csv"
            result = services.contribution_upload(
                datanet=datanet, contributor=UserFactory(roles=[CONTRIBUTOR]), inline=True,
                file=SimpleUploadedFile(name, rows_csv(part, labelled=labelled), content_type="text/csv"),
                file_name=name, text_column="text", label_column="label" if labelled else "")
            contribution = result.contribution
            if contribution.ingest_state != Contribution.IngestState.DONE or contribution.record_count != len(part):
                raise ValueError(f"the ingest kept {contribution.record_count} of {len(part)} rows: "
                                 f"{contribution.ingest_errors[:3]}")
            services.contribution_accept(contribution=contribution, curator=curator)
        return services.datanet_version_create(datanet=datanet, user=curator)
