"""Writes tests/data/reference_trajectory.{pt,npz}: a few JEM training
steps of the reference implementation, deterministic, for
tests/test_reference_trajectory.py.

Run with the reference's venv and code (tools/reference/README.md says how
to get them; nothing of the reference is copied into this project):

  REF_JEM_DIR=/path/to/JEM /path/to/ref-venv/bin/python \\
      tools/reference/write_trajectory_fixture.py tests/data

The model (`CCF`, a WRN-10-1 without normalisation), the sampler
(`get_sample_q`: SGLD from the replay buffer, written back) and the
optimizer settings are the reference's own (train_wrn_ebm.py); the loss is
its training loop's, L = −(mean f(x_p_d) − mean f(x_q)) + CE(f.classify(x_lab),
y_lab), on fixed batches. To make the steps deterministic: σ = 0 (no SGLD
noise), ρ = 0 (no re-initialisation) and a buffer of one image, so that the
random buffer indices the reference draws do not matter: every chain starts
from it, all chains are alike, and what is written back is alike.
"""

import os
import sys
import types

import numpy as np
import torch as t

REF = os.environ.get("REF_JEM_DIR")
if not REF:
  sys.exit("Set REF_JEM_DIR to the reference's checkout (wgrathwohl/JEM).")
sys.path.insert(0, REF)
import train_wrn_ebm as ref  # pylint: disable=g-import-not-at-top,import-error

STEPS = 3
BATCH = 4
SGLD_STEPS = 5
LR = 1e-4


def main(out_dir):
  t.manual_seed(0)
  rng = np.random.default_rng(0)
  args = types.SimpleNamespace(
      n_steps=SGLD_STEPS, sgld_lr=1.0, sgld_std=0.0, reinit_freq=0.0,
      batch_size=BATCH, n_classes=10, uncond=False)
  ref.n_ch, ref.im_sz = 3, 32  # init_random reads these module globals.
  f = ref.CCF(depth=10, width=1, norm=None, dropout_rate=0.0, n_classes=10)
  start = t.tensor(rng.uniform(-1, 1, (1, 3, 32, 32)), dtype=t.float32)
  replay_buffer = start.clone()
  t.save({"model_state_dict": f.state_dict(),
          "replay_buffer": replay_buffer.clone()},
         os.path.join(out_dir, "reference_trajectory.pt"))
  sample_q = ref.get_sample_q(args, t.device("cpu"))
  optim = t.optim.Adam(f.parameters(), lr=LR, betas=[.9, .999],
                       weight_decay=0.0)
  x_p_d = rng.uniform(-1, 1, (STEPS, BATCH, 3, 32, 32)).astype(np.float32)
  x_lab = rng.uniform(-1, 1, (STEPS, BATCH, 3, 32, 32)).astype(np.float32)
  y_lab = rng.integers(0, 10, (STEPS, BATCH))
  losses, px, ce = [], [], []
  for k in range(STEPS):
    x_q = sample_q(f, replay_buffer)
    fp = f(t.tensor(x_p_d[k])).mean()
    fq = f(x_q).mean()
    l_p_x = -(fp - fq)
    l_ce = t.nn.CrossEntropyLoss()(f.classify(t.tensor(x_lab[k])),
                                   t.tensor(y_lab[k]))
    loss = l_p_x + l_ce
    optim.zero_grad()
    loss.backward()
    optim.step()
    losses.append(loss.item())
    px.append(l_p_x.item())
    ce.append(l_ce.item())
  final = {f"final/{k}": v.detach().numpy()
           for k, v in f.state_dict().items()}
  np.savez(os.path.join(out_dir, "reference_trajectory.npz"),
           x_p_d=x_p_d, x_lab=x_lab, y_lab=y_lab, loss=np.array(losses),
           px_loss=np.array(px), clf_loss=np.array(ce),
           buffer=replay_buffer.numpy(), sgld_steps=SGLD_STEPS, lr=LR,
           torch_version=t.__version__, **final)
  print("losses", losses)


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else ".")
