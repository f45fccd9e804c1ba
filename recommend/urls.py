from django.urls import path

from recommend.api import AppUserView, PrivacyBudgetView, RecommendationsView

urlpatterns = [
    path("users/<str:user_id>/", AppUserView.as_view(), name="app-user"),
    path("users/<str:user_id>/recommendations/", RecommendationsView.as_view(), name="recommendations"),
    path("users/<str:user_id>/privacy-budget/", PrivacyBudgetView.as_view(), name="privacy-budget"),
]
