from django.apps import AppConfig
from django.db.backends.signals import connection_created


class RecommendConfig(AppConfig):
    name = "recommend"
    verbose_name = "Fusion, ranking and recommendations"

    def ready(self):
        from recommend.retrieval import apply_session_search_settings

        connection_created.connect(apply_session_search_settings, dispatch_uid="recommend.hnsw_session_settings")
