from django.urls import path

from bench.peer.views import RowDetail, RowList

urlpatterns = [
    path("rows/", RowList.as_view()),
    path("rows/<int:key>", RowDetail.as_view()),
]
