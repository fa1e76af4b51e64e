#error "must not be collected"
