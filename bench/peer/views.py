"""DRF generic views, as the tutorial writes them: a row by key, and many rows by ``?keys=``."""

from rest_framework import generics, serializers

from bench.peer.models import Row


class RowSerializer(serializers.ModelSerializer):
    class Meta:
        model = Row
        fields = ["key", "data"]


class RowDetail(generics.RetrieveUpdateDestroyAPIView):
    queryset = Row.objects.all()
    serializer_class = RowSerializer
    lookup_field = "key"


class RowList(generics.ListCreateAPIView):
    serializer_class = RowSerializer

    def get_queryset(self):
        keys = self.request.query_params.get("keys")
        if keys:
            return Row.objects.filter(key__in=[int(k) for k in keys.split(",")])
        return Row.objects.all()[:100]
