"""Forms for the members page. Role choices are narrowed to what the acting user may grant."""

from __future__ import annotations

from django import forms

from .models import Role
from .services import assignable_roles


class _RoleChoiceMixin:
    def _limit_roles(self, actor_role: Role) -> None:
        field = self.fields["role"]  # type: ignore[attr-defined]
        field.choices = [(r.value, r.label) for r in assignable_roles(actor_role)]


class AddMemberForm(_RoleChoiceMixin, forms.Form):
    email = forms.EmailField(label="E-mail address", max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def __init__(self, *args: object, actor_role: Role, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._limit_roles(actor_role)


class ChangeRoleForm(_RoleChoiceMixin, forms.Form):
    role = forms.ChoiceField(choices=Role.choices)

    def __init__(self, *args: object, actor_role: Role, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._limit_roles(actor_role)
