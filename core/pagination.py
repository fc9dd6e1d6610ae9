"""The API's page-number pagination (DEFAULT_PAGINATION_CLASS). Its own module: DRF imports it while
`rest_framework.generics` is still loading, so it must not import drf-spectacular (core/api.py does)."""
import re

from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination

INT = re.compile(r"-?[0-9]+")


class Pagination(PageNumberPagination):
    """DRF's page-number pagination, but `?page=` that is not a whole number is a 400 (DRF reads it as page 1);
    a page past the end stays DRF's 404."""

    def get_page_number(self, request, paginator):
        value = request.query_params.get(self.page_query_param)
        if value is not None and value not in self.last_page_strings and not INT.fullmatch(value):
            raise serializers.ValidationError({self.page_query_param: ["Must be a whole number."]})
        return super().get_page_number(request, paginator)
