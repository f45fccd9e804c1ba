"""Train a tenant's fusion and ranking models and activate them."""

from django.core.management.base import BaseCommand, CommandError

from recommend.training import TrainingConfig, train_tenant_models
from users.models import Tenant


class Command(BaseCommand):
    help = "Train the fusion weights and the Transformer ranker of a tenant from its interactions."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant name.")
        parser.add_argument("--fusion-epochs", type=int, default=2, help="Passes over the history pairs (default 2).")
        parser.add_argument("--ranker-epochs", type=int, default=2, help="Ranker epochs (default 2).")
        parser.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
        parser.add_argument("--no-activate", action="store_true", help="Store the versions without serving them.")
        parser.add_argument("--async", dest="run_async", action="store_true",
                            help="Enqueue the training task for a worker instead of training here.")

    def handle(self, *args, tenant, fusion_epochs, ranker_epochs, seed, no_activate, run_async, **options):
        tenant_obj = Tenant.objects.filter(name=tenant).first()
        if tenant_obj is None:
            raise CommandError(f"No tenant named {tenant!r}; create it or import data for it first.")
        if fusion_epochs < 0 or ranker_epochs < 0:
            raise CommandError("Epoch counts must be 0 or more.")
        if run_async:
            from workers.tasks import train_tenant_models_task

            train_tenant_models_task.delay(tenant_obj.pk)
            self.stdout.write(f"Queued training for tenant {tenant}.")
            return

        config = TrainingConfig(fusion_epochs=fusion_epochs, ranker_epochs=ranker_epochs, seed=seed)
        try:
            result = train_tenant_models(tenant_obj.pk, config, activate=not no_activate, progress=True)
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Stored {result['fusion']} and {result['ranker']}"
                          + ("" if no_activate else " (active)"))
        for name, value in sorted(result["metrics"].items()):
            self.stdout.write(f"  {name}: {value}")
