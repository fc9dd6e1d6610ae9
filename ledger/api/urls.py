from django.urls import path

from ledger.api import views

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
    path("ledger/fee-split/proposals/", views.FeeSplitProposalApi.as_view(), name="api-ledger-proposals"),
    path("ledger/fee-split/proposals/<int:proposal_id>/execute/", views.FeeSplitExecuteApi.as_view(),
         name="api-ledger-proposal-execute"),
]
