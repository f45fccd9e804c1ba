from django.urls import path

from users.api import InteractionsView

urlpatterns = [
    path("interactions/", InteractionsView.as_view(), name="interactions"),
]
