#ifndef UNET_DIST_CLOSS_H
#define UNET_DIST_CLOSS_H

/// BCEWithLogits over n elements: returns the sum of max(x, 0) - x t + log1p(exp(-|x|)) in
/// double and, when `dlogits` is not NULL, writes (sigmoid(x) - t) * grad_scale. One
/// e = exp(-|x|) serves both: sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) below.
/// `vectors` 1 (AVX-512) or 2 (AVX2) takes glibc's vector expf and log1pf (libmvec) sixteen or
/// eight lanes at a time, 0 the scalar ones: equal within float32's rounding, not bit for bit
/// (libmvec's functions are not glibc's scalar ones, nor its 8-lane ones its 16-lane ones).
double closs_bce_with_logits(float *dlogits, const float *logits, const float *targets, long n, float grad_scale,
                             int vectors);

#endif
