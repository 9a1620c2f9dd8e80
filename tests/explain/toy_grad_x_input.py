"""A toy attribution method, written as a new module of explain/methods/ would be (see its docstring)."""
import torch

from explain.methods.base import GradientMethod


class GradientTimesInput(GradientMethod):
    name = "grad_x_input"
    captum_class = "captum.attr.InputXGradient on the difference from the baseline"

    def attribute_dims(self, t, **settings):
        embs = tuple(e.clone().requires_grad_() for e in t.embs)
        grads = torch.autograd.grad(t.net.score(*embs).sum(), embs)
        return tuple((g * (e - b)).detach() for g, e, b in zip(grads, t.embs, t.base)), None

    def reference(self, t, gen, **settings):
        from captum.attr import InputXGradient

        diff = tuple((e - b).requires_grad_() for e, b in zip(t.embs, t.base))
        out = InputXGradient(lambda *d: t.net.score(*(b + x for b, x in zip(t.base, d)))).attribute(diff)
        return torch.cat([o.detach() for o in out], 1)


METHOD = GradientTimesInput()
