from core.roles import ROLES, user_has_role


def roles(request):
    user = getattr(request, "user", None)
    if user is None:
        return {"user_roles": set()}
    return {"user_roles": {r for r in ROLES if user_has_role(user, r)}}
