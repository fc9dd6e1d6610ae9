// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Hashes} from "@openzeppelin/contracts/utils/cryptography/Hashes.sol";
import {RewardDistributor} from "../../RewardDistributor.sol";
import {Cheats, MockToken} from "./Base.sol";

/// @dev Drives RewardDistributor as the operator and the claimants do: epochs with growing cumulative totals in
/// StandardMerkleTree trees built here, claims and batches against them (honest, repeated, stale), time passing,
/// sweeps and donations. Every call states its expected outcome (success and exact payment, or the revert) and
/// fails the run otherwise; ghost totals feed the invariants in RewardDistributor.t.sol.
contract RewardDistributorHandler is Cheats {
    uint256 public constant N = 5; // accounts; trees of 1..5 leaves cover balanced and unbalanced layouts

    RewardDistributor public immutable rd;
    MockToken public immutable token;
    address public immutable operator;
    address public immutable treasury;
    address[N] public accounts;

    // The current generation's published totals and the current tree (the accounts 0..inTree-1).
    uint256[N] public cumulative;
    uint256 public inTree;
    bytes32[] internal tree;
    mapping(uint256 => uint256) internal leafIndex; // account => index of its leaf in `tree`

    // A leaf and proof from an earlier tree (or generation), replayed by claimStale.
    uint256 internal staleAccount;
    uint256 internal staleCumulative;
    bytes32[] internal staleProof;
    bool internal hasStale;

    // Ghosts.
    uint256 public fundedIn; // tokens the operator transferred in, all generations
    uint256 public donated; // tokens sent straight to the contract (never owed to anyone)
    uint256 public paidOut; // tokens paid to accounts, all generations
    uint256 public swept; // tokens returned to the treasury
    uint24 public generations; // sweeps so far
    uint256 public maxPublishedCumulative; // the largest cumulative in any tree (for the bound below)
    uint256 public calls;

    constructor(RewardDistributor rd_, MockToken token_, address operator_, address treasury_) {
        rd = rd_;
        token = token_;
        operator = operator_;
        treasury = treasury_;
        for (uint256 i; i < N; ++i) accounts[i] = address(uint160(0xA11CE0 + i));
    }

    // --- actions -------------------------------------------------------------------------------

    /// Publish the next epoch: every account's total grows by 0..1e24 (some by nothing), the tree holds the first
    /// `size` accounts, funding covers every total (or falls short by `shortBy` when `underfund`, never below
    /// what is already funded), the deadline is 1 s to 30 days out.
    function publish(uint256 size, uint256[N] calldata grow, uint256 window, bool underfund, uint256 shortBy)
        external
    {
        ++calls;
        _keepStale();
        (uint96 sFunded,, uint40 deadline,) = rd.state();
        uint256 owed;
        for (uint256 i; i < N; ++i) {
            cumulative[i] += bound(grow[i], 0, 1e24);
            owed += cumulative[i];
            if (cumulative[i] > maxPublishedCumulative) maxPublishedCumulative = cumulative[i];
        }
        uint256 funded = owed;
        if (underfund) funded = owed - bound(shortBy, 0, owed);
        if (funded < sFunded) funded = sFunded;
        inTree = bound(size, 1, N);
        _buildTree();
        uint256 start = block.timestamp + 1 > deadline ? block.timestamp + 1 : deadline;
        uint64 newDeadline = uint64(start + bound(window, 0, 30 days));
        uint256 topUp = funded - sFunded;
        token.mint(operator, topUp);
        vm.startPrank(operator);
        token.approve(address(rd), topUp);
        rd.publishEpoch(rd.currentEpoch() + 1, _gen(), tree[0], funded, newDeadline);
        vm.stopPrank();
        fundedIn += topUp;
    }

    /// Anyone claims for account `who % N` with its leaf in the current tree.
    function claim(uint256 who, address submitter) external {
        ++calls;
        uint256 i = who % N;
        if (rd.root() == bytes32(0) || i >= inTree) return; // no leaf to claim with
        _claimExpecting(i, cumulative[i], _proof(i), submitter);
    }

    /// A batch of up to 6 claims (accounts may repeat: the repeat is paid nothing).
    function claimMany(uint256 picks, uint256 count) external {
        ++calls;
        if (rd.root() == bytes32(0)) return;
        uint256 n = bound(count, 1, 6);
        address[] memory who = new address[](n);
        uint256[] memory cums = new uint256[](n);
        bytes32[][] memory proofs = new bytes32[][](n);
        uint256[N] memory before;
        uint256[N] memory owedNow;
        uint256 total;
        bool[N] memory seen;
        for (uint256 k; k < n; ++k) {
            uint256 i = (picks >> (8 * k)) % inTree;
            who[k] = accounts[i];
            cums[k] = cumulative[i];
            proofs[k] = _proof(i);
            if (!seen[i]) {
                seen[i] = true;
                uint256 already = rd.claimed(_gen(), accounts[i]);
                owedNow[i] = cumulative[i] > already ? cumulative[i] - already : 0;
                total += owedNow[i];
            }
        }
        for (uint256 i; i < N; ++i) before[i] = token.balanceOf(accounts[i]);
        (uint96 sFunded, uint96 sClaimed, uint40 deadline,) = rd.state();
        try rd.claimMany(who, cums, proofs) {
            vm.assertTrue(block.timestamp <= deadline, "claimMany: paid after the window closed");
            vm.assertLe(sClaimed + total, sFunded, "claimMany: paid beyond funding");
            for (uint256 i; i < N; ++i) {
                vm.assertEq(token.balanceOf(accounts[i]) - before[i], owedNow[i], "claimMany: wrong payment");
            }
            paidOut += total;
        } catch (bytes memory err) {
            bytes4 sel = selectorOf(err);
            if (block.timestamp > deadline) {
                assertSel(sel, RewardDistributor.ClaimWindowClosed.selector, "claimMany: expected ClaimWindowClosed");
            } else {
                assertSel(sel, RewardDistributor.ExceedsFunding.selector, "claimMany: unexpected revert");
                vm.assertTrue(sClaimed + total > sFunded, "claimMany: ExceedsFunding within funding");
            }
        }
    }

    /// Replay a leaf and proof from an earlier tree (maybe an earlier generation) against the current root.
    function claimStale(address submitter) external {
        ++calls;
        if (!hasStale) return;
        _claimExpecting(staleAccount, staleCumulative, staleProof, submitter);
    }

    function warp(uint256 secs) external {
        ++calls;
        vm.warp(block.timestamp + bound(secs, 0, 20 days));
    }

    /// Anyone sweeps: only after the window, all that is unclaimed goes to the treasury, totals restart.
    function sweep(address caller) external {
        ++calls;
        (uint96 sFunded, uint96 sClaimed, uint40 deadline, uint24 gen) = rd.state();
        bool published = rd.root() != bytes32(0);
        uint256 before = token.balanceOf(treasury);
        vm.prank(caller);
        try rd.sweep() {
            vm.assertTrue(published && block.timestamp > deadline, "sweep: swept while open or empty");
            vm.assertEq(token.balanceOf(treasury) - before, sFunded - sClaimed, "sweep: wrong amount to treasury");
            vm.assertEq(_gen(), uint256(gen) + 1, "sweep: generation not bumped");
            swept += sFunded - sClaimed;
            ++generations;
            _keepStale();
            for (uint256 i; i < N; ++i) cumulative[i] = 0;
            inTree = 0;
        } catch (bytes memory err) {
            bytes4 sel = selectorOf(err);
            if (!published) assertSel(sel, RewardDistributor.NothingPublished.selector, "sweep: expected NothingPublished");
            else assertSel(sel, RewardDistributor.ClaimWindowOpen.selector, "sweep: expected ClaimWindowOpen");
        }
    }

    /// Someone sends tokens straight to the contract: owed to no one, never claimable.
    function donate(uint256 amount) external {
        ++calls;
        amount = bound(amount, 0, 1e22);
        token.mint(address(rd), amount);
        donated += amount;
    }

    // --- helpers -------------------------------------------------------------------------------

    /// @dev The claim of (account i, cum) with `proof`: it must pay exactly what is unclaimed when the leaf is in
    /// the current tree, the window is open and funding covers it; otherwise revert with the reason.
    function _claimExpecting(uint256 i, uint256 cum, bytes32[] memory proof, address submitter) private {
        address account = accounts[i];
        (uint96 sFunded, uint96 sClaimed, uint40 deadline, uint24 gen) = rd.state();
        bool published = rd.root() != bytes32(0);
        bool inCurrent = published && i < inTree && cum == cumulative[i] && rd.verify(rd.currentEpoch(), account, cum, proof);
        uint256 already = rd.claimed(gen, account);
        uint256 owed = cum > already ? cum - already : 0;
        uint256 before = token.balanceOf(account);
        vm.prank(submitter);
        try rd.claim(account, cum, proof) {
            vm.assertTrue(inCurrent, "claim: paid on a leaf not in the current tree");
            vm.assertTrue(block.timestamp <= deadline, "claim: paid after the window closed");
            vm.assertTrue(owed > 0, "claim: paid twice for one total");
            vm.assertLe(sClaimed + owed, sFunded, "claim: paid beyond funding");
            vm.assertEq(token.balanceOf(account) - before, owed, "claim: wrong payment");
            vm.assertEq(rd.claimed(gen, account), cum, "claim: claimed total not recorded");
            paidOut += owed;
        } catch (bytes memory err) {
            bytes4 sel = selectorOf(err);
            if (!published) {
                assertSel(sel, RewardDistributor.NothingPublished.selector, "claim: expected NothingPublished");
            } else if (block.timestamp > deadline) {
                assertSel(sel, RewardDistributor.ClaimWindowClosed.selector, "claim: expected ClaimWindowClosed");
            } else if (!inCurrent) {
                assertSel(sel, RewardDistributor.InvalidProof.selector, "claim: expected InvalidProof");
            } else if (owed == 0) {
                assertSel(sel, RewardDistributor.AlreadyClaimed.selector, "claim: expected AlreadyClaimed");
            } else {
                assertSel(sel, RewardDistributor.ExceedsFunding.selector, "claim: unexpected revert");
                vm.assertTrue(sClaimed + owed > sFunded, "claim: ExceedsFunding within funding");
            }
        }
    }

    function _keepStale() private {
        if (inTree == 0) return;
        staleAccount = calls % inTree;
        staleCumulative = cumulative[staleAccount];
        staleProof = _proof(staleAccount);
        hasStale = true;
    }

    /// @dev OpenZeppelin StandardMerkleTree: leaves sorted by hash fill the array from the end, node k hashes its
    /// children 2k+1 and 2k+2 (sorted pair), the root is node 0.
    function _buildTree() private {
        uint256 n = inTree;
        bytes32[] memory leaves = new bytes32[](n);
        uint256[] memory order = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            leaves[i] = rd.leaf(accounts[i], cumulative[i]);
            order[i] = i;
        }
        for (uint256 a = 1; a < n; ++a) { // insertion sort of the account order by leaf hash
            for (uint256 b = a; b > 0 && leaves[order[b - 1]] > leaves[order[b]]; --b) {
                (order[b - 1], order[b]) = (order[b], order[b - 1]);
            }
        }
        delete tree;
        for (uint256 k; k < 2 * n - 1; ++k) tree.push(bytes32(0));
        for (uint256 s; s < n; ++s) {
            uint256 at = 2 * n - 2 - s;
            tree[at] = leaves[order[s]];
            leafIndex[order[s]] = at;
        }
        for (uint256 k = n - 1; k > 0; --k) {
            tree[k - 1] = Hashes.commutativeKeccak256(tree[2 * (k - 1) + 1], tree[2 * (k - 1) + 2]);
        }
    }

    function _proof(uint256 i) private view returns (bytes32[] memory proof) {
        uint256 j = leafIndex[i];
        uint256 len;
        for (uint256 k = j; k > 0; k = (k - 1) / 2) ++len;
        proof = new bytes32[](len);
        for (uint256 d; j > 0; ++d) {
            proof[d] = tree[j % 2 == 1 ? j + 1 : j - 1];
            j = (j - 1) / 2;
        }
    }

    function _gen() private view returns (uint24 g) {
        (,,, g) = rd.state();
    }
}
