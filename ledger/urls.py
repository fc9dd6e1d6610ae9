from django.urls import path

from ledger import views

app_name = "ledger"
urlpatterns = [
    path("", views.explorer, name="explorer"),
    path("transactions/", views.transaction_list, name="transactions"),
    path("transactions/<int:pk>/retry/", views.transaction_retry, name="transaction-retry"),
    path("epochs/", views.epoch_list, name="epochs"),
    path("epochs/<int:pk>/tree.json", views.epoch_tree, name="epoch-tree"),
    path("rewards/", views.my_rewards, name="rewards"),
    path("claims/<int:pk>/claim/", views.claim, name="claim"),
]
