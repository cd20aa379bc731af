from django.shortcuts import render


def index(request):
    return render(request, "chat/index.html", {"room": request.GET.get("room", "lobby")})


def dashboard(request):
    """One socket, many topics: the ticker, the user's notices, desk feeds
    (DashboardConsumer)."""
    user = getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    context = {
        "user_id": user.pk if signed_in else None,
        "username": user.get_username() if signed_in else "",
    }
    return render(request, "chat/dashboard.html", context)
