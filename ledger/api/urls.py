from django.urls import path

from ledger.api import governance, views

urlpatterns = [
    path("ledger/", views.ChainApi.as_view(), name="api-ledger-chain"),
    path("ledger/balances/", views.BalancesApi.as_view(), name="api-ledger-balances"),
    path("ledger/accruals/", views.AccrualListApi.as_view(), name="api-ledger-accruals"),
    path("ledger/claims/", views.ClaimListApi.as_view(), name="api-ledger-claims"),
    path("ledger/claims/<int:claim_id>/claim/", views.ClaimRequestApi.as_view(), name="api-ledger-claim"),
    path("ledger/epochs/", views.EpochListApi.as_view(), name="api-ledger-epochs"),
    path("ledger/epochs/<int:epoch_id>/tree/", views.EpochTreeApi.as_view(), name="api-ledger-epoch-tree"),
    path("ledger/transactions/", views.TransactionListApi.as_view(), name="api-ledger-transactions"),
    path("ledger/transactions/<int:transaction_id>/retry/", views.TransactionRetryApi.as_view(),
         name="api-ledger-transaction-retry"),
    path("ledger/governance/", governance.GovernanceAccountApi.as_view(), name="api-governance"),
    path("ledger/governance/delegate/", governance.DelegateApi.as_view(), name="api-governance-delegate"),
    path("ledger/governance/proposals/", governance.ProposalListApi.as_view(), name="api-governance-proposals"),
    path("ledger/governance/proposals/<int:proposal_id>/", governance.ProposalDetailApi.as_view(),
         name="api-governance-proposal"),
    path("ledger/governance/proposals/<int:proposal_id>/vote/", governance.VoteApi.as_view(),
         name="api-governance-vote"),
    path("ledger/governance/proposals/<int:proposal_id>/queue/", governance.QueueApi.as_view(),
         name="api-governance-queue"),
    path("ledger/governance/proposals/<int:proposal_id>/execute/", governance.ExecuteApi.as_view(),
         name="api-governance-execute"),
]
