from django.urls import path

from videos.api import SimilarVideosView, VideoDetailView, VideoListView

urlpatterns = [
    path("videos/", VideoListView.as_view(), name="video-list"),
    path("videos/<str:video_id>/", VideoDetailView.as_view(), name="video-detail"),
    path("videos/<str:video_id>/similar/", SimilarVideosView.as_view(), name="video-similar"),
]
