from decimal import Decimal

from accounts.tests.factories import UserFactory
from core.factory_boy import factory_boy as factory
from core.roles import CONTRIBUTOR, CURATOR
from datanets.models import Datanet


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
