with

source as (

    select * from {{ source('metadata', 'plan_assignments') }}

),

renamed as (

    select
        cast(assignment_id as bigint) as assignment_id,
        tenant_id,
        plan as plan_id,
        cast(effective_from as timestamptz) as effective_from,
        cast(created_at as timestamptz) as created_at
    from source

)

select * from renamed
