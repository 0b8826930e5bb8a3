#ifndef UNET_DIST_CLOSS_H
#define UNET_DIST_CLOSS_H

/// BCEWithLogits over n elements: returns the sum of max(x, 0) - x t + log1p(exp(-|x|)) in
/// double and, when `dlogits` is not NULL, writes (sigmoid(x) - t) * grad_scale. One
/// e = exp(-|x|) serves both: sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) below.
/// `avx512` takes glibc's vector expf and log1pf (libmvec) sixteen lanes at a time; otherwise
/// the scalar ones.
double closs_bce_with_logits(float *dlogits, const float *logits, const float *targets, long n, float grad_scale,
                             int avx512);

#endif
