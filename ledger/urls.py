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
    path("governance/", views.governance_page, name="governance"),
    path("governance/delegate/", views.governance_delegate, name="governance-delegate"),
    path("governance/propose/", views.governance_propose, name="governance-propose"),
    path("governance/<int:pk>/", views.proposal_detail, name="proposal"),
    path("governance/<int:pk>/vote/", views.proposal_act, {"act": "vote"}, name="proposal-vote"),
    path("governance/<int:pk>/queue/", views.proposal_act, {"act": "queue"}, name="proposal-queue"),
    path("governance/<int:pk>/execute/", views.proposal_act, {"act": "execute"}, name="proposal-execute"),
]
