from django import forms

from privacy.models import POLICY_EDITABLE_FIELDS, PrivacyPolicy
from privacy.validation import budget_error, epsilon_error, retrieval_fraction_error


def _model_field(name: str):
    return PrivacyPolicy._meta.get_field(name)


class PrivacyFloatField(forms.FloatField):
    """A float field that lets NaN and infinity through to the form's range checks.

    Django's FloatField rejects them with a bare "Enter a number."; passing them on
    lets the form name the allowed range and the rejected value instead.
    """

    def validate(self, value):
        forms.Field.validate(self, value)


class PrivacyPolicyForm(forms.ModelForm):
    """The admin's policy form: rejects out-of-range privacy parameters with the allowed range."""

    epsilon = PrivacyFloatField(
        initial=_model_field("epsilon").default, help_text=_model_field("epsilon").help_text
    )
    budget = PrivacyFloatField(initial=_model_field("budget").default, help_text=_model_field("budget").help_text)
    retrieval_fraction = PrivacyFloatField(
        initial=_model_field("retrieval_fraction").default,
        help_text=_model_field("retrieval_fraction").help_text,
    )

    class Meta:
        model = PrivacyPolicy
        fields = ("tenant", *POLICY_EDITABLE_FIELDS)

    def clean_epsilon(self):
        return self._checked("epsilon", epsilon_error)

    def clean_budget(self):
        return self._checked("budget", budget_error)

    def clean_retrieval_fraction(self):
        return self._checked("retrieval_fraction", retrieval_fraction_error)

    def _checked(self, name: str, check):
        value = self.cleaned_data.get(name)
        message = check(value)
        if message is not None:
            raise forms.ValidationError(message, code=f"invalid_{name}")
        return value
